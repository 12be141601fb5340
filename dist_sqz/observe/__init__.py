"""What watches a run and tells about it: per-step metrics and their sinks (JSONL, W&B),
stragglers and traces (`timeline`, `step_view`), reports of runs, plots and tables. Nothing
here changes what a run computes."""

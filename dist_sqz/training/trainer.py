"""The training loop: short and linear, with timing and accounting beside each step.

Rank 0 owns the run directory (config.yaml, metrics.jsonl, summary.json, checkpoints/).
Randomness is a function of (seed, step, rank): weights come from `seed`, each step reseeds
dropout, batches and their augmentation depend on the step alone, and the learning rate is a
function of the step, so a resumed run retraces the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from typing import Any

import torch

from dist_sqz.comm.accounting import StepComm, sent_bytes
from dist_sqz.errors import CommFailure, RunFailure, Stopped
from dist_sqz.observe.metrics import (
    JsonlSink,
    Logging,
    build_summary,
    done_line,
    open_sinks,
    read_jsonl,
    step_record,
)
from dist_sqz.observe.step_view import log_line
from dist_sqz.observe.timeline import merge_trace, write_trace
from dist_sqz.options import pick
from dist_sqz.training import checkpoint
from dist_sqz.training.evaluate import evaluate
from dist_sqz.training.health import Diverged
from dist_sqz.training.optim import lr_at, set_lr
from dist_sqz.training.setup import TrainerSetup
from dist_sqz.training.step import StepResult, step_seed


class Trainer(TrainerSetup):
    """Runs one training run: the loop, checkpoints, health, and the summary at the end."""

    # -- run directory -------------------------------------------------------------------
    def _open_sinks(self) -> None:
        if not self.env.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(self.cfg.dump_yaml())
        checkpoint.mark_launch(self.out)
        keep = self.start_step if self.resume is not None or self.restarted else None
        if keep is not None:  # the run is not finished until it writes its summary again
            (self.out / "summary.json").unlink(missing_ok=True)
        self.sinks = open_sinks(pick(Logging, self.cfg), self.out, keep, self.cfg.to_dict())
        self.coll_log = JsonlSink(self.out / "collectives.jsonl", keep_below_step=keep)

    def _save(self, step: int) -> None:
        """Every rank's state for `step` (`checkpoint.Checkpointer`). Parameters that are
        not finite are never saved (replicas are equal: every rank finds it)."""
        self.control.saved()
        if not checkpoint.params_finite(self.model):
            self._fail_together(
                f"the parameters after step {step} are not finite; stopped every rank "
                f"without saving them; {self.ckpt.advice(step + 1)}, with a lower --lr (now "
                f"{self.cfg.lr:g})",
                Diverged,
            )
        state = None
        if self.env.is_main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "step": step,
                "config": self.cfg.to_dict(),
                "world_size": self.env.world_size,
                **({"scaler": self.scaler.state_dict()} if self.scaler else {}),
            }
        self.ckpt.save(step, state, self.compressor.state_dict())

    def _record(
        self, step: int, lr: float, result: StepResult, comm: StepComm, wire: int | None
    ) -> dict[str, Any]:
        compute = self.compute_s
        optim_s = result.optimizer_s
        # The compressor's encoding and decoding (compute inside the step; comm_time_s holds
        # the collectives alone). Its decoding has run: the optimizer waited for the exchange.
        encode_s = self.compressor.take_compute_s()
        # Waiting for the network: the step less its compute, encoding included.
        exposed = None if compute is None else result.step_s - (compute + optim_s + encode_s)
        record = step_record(
            self.cfg,
            self.env.world_size,
            step,
            result.loss,
            lr,
            result.step_s,
            exposed,
            comm,
            wire,
            self.dilation,
            self.emu.batch_size if self.emu else None,
            self.emu.late_s if self.emu else None,
        )
        if result.grad_norm is not None:
            record["grad_norm"] = float(result.grad_norm)  # before clipping
        record["compress_time_s"] = encode_s / self.dilation
        return record

    def _maybe_evaluate(self, record: dict[str, Any]) -> bool:
        """Evaluate at every `eval_every` steps and at the last step, into `record`; True when
        the target accuracy is reached (the same on every rank: the result is reduced)."""
        step, cfg = record["step"], self.cfg
        due = step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)
        if not due or self.held_out is None:
            return False
        t0 = time.perf_counter()
        if cfg.broadcast_buffers:  # rank 0's statistics, as DDP's forward would
            self._rank0_buffers()
        record.update(
            evaluate(self.model, self.held_out, self.device, self.backend.all_gather_object)
        )
        record["eval_time_s"] = time.perf_counter() - t0
        target = cfg.target_accuracy
        return target is not None and record["accuracy"] >= target

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        if env.is_main:
            print(
                f"dist-sqz: {cfg.model} ({self.params:,} params) on {env.world_size} worker(s), "
                f"backend {cfg.backend} via {env.launcher}, compression {cfg.compression}, "
                f"steps {self.start_step + 1}-{cfg.steps}, run dir {self.out}",
                flush=True,
            )
        self._open_sinks()
        first_measured = max(cfg.warmup_steps, self.start_step)
        self.last_step = self.start_step
        control = self.control
        control.install()
        self.timeline.start(time.perf_counter())
        try:
            for step in range(self.start_step, cfg.steps):
                # -- data: this step's batch, on the device (the wait is data_time_s)
                t_data = time.perf_counter()
                x, y = next(self.batches)
                x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
                y = y.to(self.device, non_blocking=True)
                data_s = time.perf_counter() - t_data
                # -- probes, outside the timed step
                seed = step_seed(cfg.seed, step, env.rank)
                if step == self.start_step > 0 and self.backend.rebuilds_buckets:
                    self.train_step.probe_compute(x, y, seed, 1)  # DDP's buckets as before
                if step == first_measured and cfg.compute_probe_steps:
                    steps = cfg.compute_probe_steps
                    self.compute_s = self.train_step.probe_compute(x, y, seed, steps)
                # -- the step: its arithmetic, bytes and time
                torch.manual_seed(seed)
                self.compressor.set_step(step)
                lr = lr_at(self.schedule, step, env.world_size)
                set_lr(self.optimizer, lr)
                tx0 = self.tx() if self.tx else None
                self.compressor.take_compute_s()  # from here on: this step's encoding
                traced = self.timeline.traced(step + 1)
                self.compressor.pieces = [] if traced else None
                self.torch_profile.before(step + 1)
                result = self.train_step(x, y)
                comm = self.backend.ledger.take_step()
                done = self.last_step = step + 1
                # -- health, and the decision every rank takes alike
                bad = self.guard.local_bad(result.loss, result.grad_norm, self.scaler is not None)
                if env.is_main:
                    self.stall.loss(done, result.loss)
                timing = self.timeline.measure(result.step_s, result.marks["start"], comm.records)
                # The agreement collective also drains this step's sends (TCP delivers them
                # before it), so wire_bytes counts the whole step; it adds a few packets. The
                # ranks' timing figures ride in it (timeline.py).
                decision = control.decide(bad, self.stall.stalled, timing)
                self.timeline.synced_at(time.perf_counter(), done + 1)
                self.torch_profile.after(done)
                wire = self.tx() - tx0 if self.tx else None
                # -- the record: metrics, evaluation, sinks
                record = self._record(done, lr, result, comm, wire)
                record.update(self.timeline.fields(decision.extra))
                if self.coll_log:
                    line = log_line(
                        done, record["warmup"], env.world_size, comm.records, self.dilation
                    )
                    self.coll_log.write(line)
                if traced:
                    self._trace(done, result, comm)
                record["data_time_s"] = data_s  # waiting for the loader, outside step_time_s
                if decision.nonfinite:
                    self._nonfinite(record, result)
                else:
                    self.guard.good(done, result.loss)
                reached = self._maybe_evaluate(record)
                self._watch_stall(record)
                for sink in self.sinks:
                    sink.write(record)
                # -- run control: stop, signal, checkpoint
                if decision.stalled and cfg.stop_when_stalled:
                    self.stopped_stalled = True
                    break
                if reached:
                    if env.is_main:
                        print(
                            f"dist-sqz: accuracy {record['accuracy']:.4f} >= "
                            f"{cfg.target_accuracy} at step {done}; stopping",
                            flush=True,
                        )
                    break
                if done == cfg.steps:
                    break
                if decision.signum:
                    self._stop(done, decision.signum)
                every = cfg.checkpoint_every
                if decision.checkpoint_due or (every and done % every == 0):
                    self._save(done)
            summary = self._finish()
            if self.stopped_stalled:
                self._fail_together(
                    f"stopped at step {self.last_step} of {cfg.steps}: the run stalled "
                    f"(--stop-when-stalled); summary and checkpoint in {self.out}"
                )
        except RuntimeError as e:
            failed = isinstance(e, self.backend.comm_errors) or self.backend.ledger.failure
            if env.world_size == 1 or not failed:
                raise
            ckpt = checkpoint.checkpoint_path(self.out)
            kept = f"; last checkpoint kept at {ckpt}" if ckpt.exists() else ""
            cause = self.backend.ledger.failure or e
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
            raise CommFailure(
                f"rank {env.rank}: a collective failed or timed out (timeout_s="
                f"{cfg.timeout_s:g}): {first}{kept}; resume with --resume {self.out}"
            ) from None
        finally:
            self.torch_profile.close()
            control.restore()
            for sink in self.sinks:
                sink.close()
            if self.coll_log:
                self.coll_log.close()
            self.backend.close()
        return summary

    def _nonfinite(self, record: dict[str, Any], result: StepResult) -> None:
        """A step some rank found not finite (no update was applied where the gradients
        were not): skip it, one line, or end the run, its record written first."""
        what = self.guard.what(result.loss, result.grad_norm)
        record["nonfinite"] = True
        for key in ("loss", "grad_norm"):  # metrics.jsonl stays valid JSON: null, not NaN
            if record.get(key) is not None and not math.isfinite(record[key]):
                record[key] = None
        try:
            advice = self.ckpt.advice(record["step"])
            line = self.guard.bad(record["step"], self.cfg.steps, what, advice)
        except Diverged as e:
            for sink in self.sinks:
                sink.write(record)
            self._fail_together(str(e), Diverged)
        if self.env.is_main:
            print(line, flush=True)

    def _fail_together(self, message: str, kind: type[RunFailure] = RunFailure) -> None:
        """End the run on every rank with rank 0's one line, printed before any rank
        leaves: a launcher kills the other workers as soon as one exits non-zero."""
        if self.env.is_main:
            print(f"dist-sqz: error: {message}", file=sys.stderr, flush=True)
        if self.env.world_size > 1:
            self.backend.control([0])
        raise kind("")

    def _watch_stall(self, record: dict[str, Any]) -> None:
        """Rank 0: feed an evaluation to the stall watch; warn once when it finds a stall."""
        if not self.env.is_main:
            return
        if record.get("accuracy") is not None:
            self.stall.accuracy(record["step"], record["accuracy"])
        if self.stall.stalled and not self.stall_warned:
            self.stall_warned = True
            record["stalled"] = True
            print(self.stall.warning(), flush=True)
        elif self.stall_warned and not self.stall.stalled:  # it recovered: say so, once
            self.stall_warned = False
            record["stalled"] = False
            print(self.stall.cleared_line(), flush=True)

    def _stop(self, step: int, signum: int) -> None:
        """Save this step's state on every rank, then end the run (no summary: it did not
        finish)."""
        self._save(step)
        name = signal.Signals(signum).name
        where = checkpoint.checkpoint_path(self.out)
        raise Stopped(
            f"stopped by {name} after step {step} of {self.cfg.steps}; checkpoint {where}; "
            f"continue with the same launcher and `dist-sqz train --resume {self.out}`"
            if self.env.is_main
            else "",
            128 + signum,
        )

    def _trace(self, step: int, result: StepResult, comm: StepComm) -> None:
        """Keep a traced step; after the last one, rank 0 writes every rank's trace.json."""
        ws = self.env.world_size
        self.timeline.trace_step(
            step,
            result.marks,
            comm.records,
            self.compressor.pieces or [],
            self.emu.pads if self.emu else [],
            [sent_bytes(r.collective, r.payload_bytes, ws) for r in comm.records],
            self.cfg.backend,
            self.cfg.compression,
        )
        if step == min(self.timeline.steps[1], self.cfg.steps):
            self._write_trace()

    def _write_trace(self) -> None:
        per_rank = self.backend.all_gather_object(self.timeline.events)
        self.timeline.events = []
        if self.env.is_main:
            meta = {
                "dist_sqz": "trace of steps " + self.cfg.trace_steps,
                "model": self.cfg.model,
                "backend": self.cfg.backend,
                "compression": self.cfg.compression,
                "world_size": self.env.world_size,
                "dilation": self.dilation,
                "clock": "each rank's own, from the moment it left the per-step agreement "
                "before the first traced step (ranks leave it together, to within its "
                "latency); emulated time (wall / dilation)",
            }
            write_trace(self.out / "trace.json", merge_trace(per_rank, meta))

    def _rank0_buffers(self) -> None:
        """Rank 0's buffers on every rank between steps: bytes of no step's (discarded)."""
        self.backend.sync_buffers(self.model)
        self.backend.ledger.take_step()

    def _finish(self) -> dict[str, Any]:
        if self.timeline.events:  # the run ended inside the traced steps
            self._write_trace()
        checksum, buffers = checkpoint.param_checksum(self.model), None
        if self.cfg.broadcast_buffers:  # rank 0's, as the next forward would have them
            self._rank0_buffers()
            buffers = checkpoint.buffer_checksum(self.model)
        checksums = self.backend.all_gather_object((checksum, buffers))
        self._save(self.last_step)
        if not self.env.is_main:
            return {}
        records = read_jsonl(self.out / "metrics.jsonl")
        summary = build_summary(
            records,
            model=self.cfg.model,
            backend=self.cfg.backend,
            compression=self.cfg.compression,
            world_size=self.env.world_size,
            batch_size=self.cfg.batch_size,
            launcher=self.env.launcher,
            device=str(self.device),
            params=self.params,
            compute_time_s=None if self.compute_s is None else self.compute_s / self.dilation,
            target_accuracy=self.cfg.target_accuracy,
            **(self.emu.describe() if self.emu else {}),
        )
        summary["param_checksum"] = checksum
        summary["replicas_consistent"] = len(set(checksums)) == 1
        summary["broadcast_buffers"] = self.cfg.broadcast_buffers
        summary["stalled"] = self.stall.stalled
        summary["stalled_at_step"] = self.stall.stalled_at
        cleared = self.stall.cleared
        summary["stall_cleared_at_step"] = cleared[0] if cleared else None
        summary["stall_cleared_why"] = cleared[1] if cleared else None
        summary["nonfinite_steps"] = self.guard.skipped
        summary["config"] = self.cfg.to_dict()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        for sink in self.sinks:
            if hasattr(sink, "summary"):
                sink.summary(summary)
        if not self.stopped_stalled:
            print(done_line(summary, self.out / "summary.json"), flush=True)
        return summary

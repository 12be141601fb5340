"""Measure small, project big, on published clusters: for each published table with more
than one multi-node size, `simulate --calibrate`'s fit on its smallest multi-node rows
predicts its largest.

Each table's rows (benchmarks/published_scaling.py's ROWS: a 1-GPU figure and N-GPU
figures, with their sources) become measured step times, batch x N / images/s; the profile
is the table's own 1-GPU figure (`dist-sqz profile --published`'s function), the spec the
system's shipped one. The fit sees only the smallest multi-node N; the table prints the
largest N's error before (the spec as shipped) and after. Published figures are inputs
here, never targets: only the four terms no data sheet gives are fitted.

    python benchmarks/calibrate_published.py [--out benchmarks/results]

Writes calibrate_published.json and .md. Seconds (shape-only models).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from published_scaling import ROWS  # noqa: E402

from dist_sqz.compute.profiles import published_profile  # noqa: E402
from dist_sqz.costmodel import load_spec  # noqa: E402
from dist_sqz.costmodel.calibrate import calibrate, predict_rows  # noqa: E402
from dist_sqz.observe.markdown import table  # noqa: E402


def tables() -> list[tuple[str, str, str, int, dict, dict]]:
    """(setup, spec, precision, batch, 1-GPU figures, {N: figures}) of the tables that hold
    at least two multi-node sizes."""
    out = []
    for setup, _source, spec_name, precision, batch, one, by_n in ROWS:
        per_node = load_spec(spec_name).gpus_per_node
        if len([n for n in by_n if n > per_node]) >= 2:
            out.append((setup, spec_name, precision, batch, one, by_n))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    lines, records = [], []
    for setup, spec_name, precision, batch, one, by_n in tables():
        spec = load_spec(spec_name)
        prof = published_profile(one, batch, precision, setup)
        rows = [
            {"model": m, "world_size": n, "step_time_s": batch * n / ips, "compression": "none"}
            for n, figures in sorted(by_n.items())
            for m, ips in figures.items()
        ]
        rows += [
            {"model": m, "world_size": 1, "step_time_s": batch / ips, "compression": "none"}
            for m, ips in one.items()
        ]
        multi = sorted(n for n in by_n if n > spec.gpus_per_node)
        small, large = multi[0], multi[-1]
        result = {"folder": setup, "pricing": (prof, precision, batch)}
        fitted, summary = calibrate(spec, rows, result, [1, small])
        held = [r for r in rows if r["world_size"] == large]
        before = predict_rows(spec, held, result)
        after = predict_rows(fitted, held, result, summary["scales"])
        for r, b, f in zip(held, before, after, strict=True):
            rec = {
                "setup": setup,
                "spec": spec_name,
                "fitted_on": small,
                "held_out": large,
                "model": r["model"],
                "measured_step_s": r["step_time_s"],
                "error_as_shipped": b / r["step_time_s"] - 1,
                "error_calibrated": f / r["step_time_s"] - 1,
                "terms": summary["terms"],
                "residuals": summary["residuals"],
            }
            records.append(rec)
        terms = ", ".join(f"{k} {v:.3g}" for k, v in summary["terms"].items())
        lines.append(f"- **{setup}** ({spec_name}), fitted on N = {small}: {terms}")
    body = [
        [
            r["setup"],
            r["model"],
            r["fitted_on"],
            r["held_out"],
            f"{r['error_as_shipped']:+.1%}",
            f"{r['error_calibrated']:+.1%}",
        ]
        for r in records
    ]
    text = "\n".join(
        [
            "Step time at the largest N of each published table, the spec as shipped against "
            "the spec calibrated on the table's smallest multi-node N:",
            "",
            *table(
                ["setup", "model", "fitted on N", "held-out N", "as shipped", "calibrated"], body
            ),
            "",
            "Fitted terms:",
            "",
            *lines,
        ]
    )
    print(text)
    out = Path(a.out)
    (out / "calibrate_published.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "calibrate_published.md").write_text(
        "# Calibration on published tables\n\n"
        + text
        + "\n\nMade by `python benchmarks/calibrate_published.py`.\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Measure small, project big: fit the few terms of a cluster spec a user cannot look up.

A spec's line rates, NIC counts and bucket sizes are on data sheets; four terms are not:
the share of the inter-node line rate a collective achieves (`inter.achieved`), the time
each of a ring's hops across the network adds (`inter.latency`: it grows with N), the fixed
cost of each collective (`collective.overhead`), and how much a running collective slows the
backward it overlaps (`interference`). `simulate --calibrate` fits them by least squares
(scipy's `least_squares`, bounded) to the step times of measured rows (a comparison's
results.json, or a folder of them), each row priced as `compare` prices it (the row's
profile, precision and batch), residuals relative to the measured step time. The fit uses
the rows with N >= 2 among `--calibrate-on`; each model's uncompressed N = 1 row (no
communication) first scales the profile's compute to what was measured, a term the spec
cannot hold (a profile measured on the cluster's own GPU needs little of it). The
calibrated spec says, in its `sources`, which terms were fitted, from which rows, and the
residuals; every row's prediction, fitted or held out, is printed against its measurement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dist_sqz.costmodel.spec import ClusterSpec
from dist_sqz.errors import UsageError

# term: (lower bound, upper bound); overhead in seconds
TERMS = {
    "inter.achieved": (0.02, 1.0),
    "inter.latency": (0.0, 0.05),
    "collective.overhead": (0.0, 0.05),
    "interference": (0.0, 0.95),
}


def load_rows(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The finished rows of a comparison (its folder or its results.json) and the result."""
    p = Path(path)
    file = p / "results.json" if p.is_dir() else p
    if not file.is_file():
        raise UsageError(f"--calibrate {path!r}: no results.json there (a compare folder?)")
    try:
        result = json.loads(file.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"--calibrate {path!r}: {file} is not JSON") from None
    rows = [r for r in result.get("rows", []) if not r.get("error") and r.get("step_time_s")]
    if not rows:
        raise UsageError(f"--calibrate {path!r}: no finished rows in {file}")
    result = result | {"folder": str(file.parent)}
    return rows, result | {"pricing": _pricing(result)}


def _pricing(result: dict[str, Any]) -> tuple[dict[str, Any], str, int | None]:
    """(profile, precision, batch or None: the profile's own) a comparison's rows were
    priced with, from its compute record; read once (`result["pricing"]`: published rows
    give theirs directly)."""
    from dist_sqz.compute.profiles import load_profile

    compute = result.get("compute") or {}
    name = compute.get("profile") or ""
    if not name:
        raise UsageError("--calibrate needs rows with emulated compute (a profile to price)")
    local = Path(result["folder"]) / "profile.json"
    if compute.get("kind") == "local" and not Path(name).is_file() and local.is_file():
        name = str(local)  # a comparison moved or committed: its own profile beside it
    batch = compute.get("batch_size") if compute.get("kind") == "profile" else None
    return load_profile(name), compute.get("precision") or "fp32", batch or None


def _with(spec: ClusterSpec, x: list[float]) -> ClusterSpec:
    achieved, latency, overhead, interference = x
    inter = {"achieved": achieved, "latency": f"{latency * 1e6:.4f}us"}
    return spec.model_copy(
        update={
            "inter": spec.inter.model_copy(update=inter),
            "collective": spec.collective.model_copy(
                update={"overhead": f"{overhead * 1e6:.4f}us"}
            ),
            "interference": interference,
        }
    )


COMPUTE_KEYS = ("forward_s", "backward_s", "optimizer_s", "step_s")


def compute_scales(spec: ClusterSpec, rows: list[dict], result: dict) -> dict[str, float]:
    """Per model, its measured 1-worker step over the profile's (no communication at N = 1):
    what the profile misses of the machine's compute (padding, launch costs), measured
    small and carried to every N. From each model's uncompressed N = 1 row."""
    ones = [r for r in rows if r["world_size"] == 1 and (r.get("compression") or "none") == "none"]
    predicted = predict_rows(spec, ones, result)
    return {r["model"]: r["step_time_s"] / p for r, p in zip(ones, predicted, strict=True)}


def with_scales(result: dict[str, Any], scales: dict[str, float]) -> dict[str, Any]:
    """`result` priced with each model's compute scaled by `scales` (a copy of its profile)."""
    profile, precision, batch = result["pricing"]
    return result | {"pricing": (_scaled(profile, scales), precision, batch)}


def _scaled(profile: dict[str, Any], scales: dict[str, float]) -> dict[str, Any]:
    out = json.loads(json.dumps(profile))
    for model, k in scales.items():
        for entries in out["models"].get(model, {}).values():
            for entry in entries.values():
                for key in COMPUTE_KEYS:
                    if key in entry:
                        entry[key] *= k
    return out


def predict_rows(
    spec: ClusterSpec, rows: list[dict], result: dict, scales: dict[str, float] | None = None
) -> list[float]:
    """Each row's step time under `spec`, priced as compare prices it (its model's compute
    scaled by `scales` where given)."""
    from dist_sqz.costmodel import predict

    if scales:
        result = with_scales(result, scales)
    profile, precision, batch = result["pricing"]
    out = []
    for r in rows:
        b = batch or int(next(iter(profile["models"][r["model"]][precision])))
        comp = r.get("compression") or "none"
        bufs = bool(r.get("broadcast_buffers"))
        row = predict([r["model"]], [r["world_size"]], spec, profile, b, precision, comp, bufs)[0]
        out.append(row["step_time_s"])
    return out


def calibrate(
    spec: ClusterSpec, rows: list[dict], result: dict, on: list[int] | None
) -> tuple[ClusterSpec, dict[str, Any]]:
    """The spec with its four terms fitted to the rows whose N is in `on` (all if None),
    after each model's compute is scaled to its N = 1 row."""
    import numpy as np
    from scipy.optimize import least_squares

    fit_rows = [r for r in rows if r["world_size"] >= 2 and (on is None or r["world_size"] in on)]
    if not fit_rows:
        raise UsageError("--calibrate needs measured rows with N >= 2 among --calibrate-on")
    measured = np.array([r["step_time_s"] for r in fit_rows])
    scales = compute_scales(spec, rows, result)

    scaled = with_scales(result, scales)  # once: every residual prices the same profile

    def residuals(x: np.ndarray) -> np.ndarray:
        predicted = predict_rows(_with(spec, list(x)), fit_rows, scaled)
        return np.array(predicted) / measured - 1

    lo, hi = zip(*TERMS.values(), strict=True)
    x0 = [spec.inter.achieved, spec.inter.si.latency_s, spec.collective.overhead_s]
    x0 += [spec.interference]
    x0 = [min(max(v, a), b) for v, a, b in zip(x0, lo, hi, strict=True)]
    fit = least_squares(residuals, x0, bounds=(lo, hi), diff_step=1e-3)
    used = [f"{r.get('arm') or r['model']} x {r['world_size']}" for r in fit_rows]
    res = [float(v) for v in fit.fun]
    terms = dict(zip(TERMS, map(float, fit.x), strict=True))
    note = (
        f"fitted by dist-sqz simulate --calibrate to {len(fit_rows)} rows of "
        f"{result['folder']} ({', '.join(used)}); relative residuals "
        + ", ".join(f"{v:+.1%}" for v in res)
    )
    fitted = _with(spec, list(fit.x))
    fitted = fitted.model_copy(
        update={
            "name": f"{spec.name} (calibrated)",
            "sources": {**fitted.sources, **dict.fromkeys(TERMS, note)},
            "description": (spec.description + "; " if spec.description else "")
            + "calibrated: "
            + ", ".join(f"{k} = {v:.4g}" for k, v in terms.items()),
        }
    )
    summary = {"terms": terms, "rows": used, "residuals": res, "scales": scales}
    return fitted, summary


def check_table(
    spec: ClusterSpec,
    rows: list[dict],
    result: dict,
    on: list[int] | None,
    scales: dict[str, float] | None = None,
) -> str:
    """Every row's predicted step time against its measurement, fitted or held out."""
    from dist_sqz.observe.markdown import table

    pred = predict_rows(spec, rows, result, scales)
    body = []
    for r, p in zip(rows, pred, strict=True):
        used = on is None or r["world_size"] in on
        error = p / r["step_time_s"] - 1
        body.append(
            [
                r.get("arm") or r["model"],
                r["world_size"],
                "fitted" if used else "held out",
                f"{r['step_time_s'] * 1e3:.1f}",
                f"{p * 1e3:.1f}",
                f"{error:+.1%}",
            ]
        )
    return "\n".join(table(["arm", "N", "row", "measured ms", "predicted ms", "error"], body))


def spec_yaml(spec: ClusterSpec, summary: dict[str, Any]) -> str:
    import yaml

    head = [
        "# A cluster spec calibrated by `dist-sqz simulate --calibrate` (docs/own-cluster.md).",
        "# Fitted: " + ", ".join(f"{k} = {v:.4g}" for k, v in summary["terms"].items()),
        "# Compute scaled per model by its N = 1 row: "
        + ", ".join(f"{m} x {k:.4g}" for m, k in summary["scales"].items()),
        "# From rows: " + ", ".join(summary["rows"]),
        "# Relative residuals: " + ", ".join(f"{v:+.2%}" for v in summary["residuals"]),
    ]
    data = spec.model_dump(exclude_defaults=False)
    return "\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False)

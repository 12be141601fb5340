"""Before a comparison's rows: each model's trial run, each row's dilation D chosen from it
(so that a row fits its padding the first time instead of overrunning it and running again),
and the rows' expected wall time here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dist_sqz import runs
from dist_sqz.compare.arms import split_arm
from dist_sqz.compare.plan import estimate
from dist_sqz.errors import UsageError

if TYPE_CHECKING:
    from dist_sqz.compare.run import Comparison


def trials(
    comp: Comparison, todo: list[tuple[str, int]], kept: Path | None = None
) -> dict[str, dict[str, float | None]]:
    """Each model's trial run (`runs.trial_run`: its per-run cost beyond its steps and its
    real step on one core), run here once per model left to run before any row, and kept in
    `kept` (a resumed comparison reads it back; an older comparison's file holds the
    overhead alone). None for real compute, which is neither padded nor estimated, nor for
    Slurm rows: a trial on the login node says nothing of the nodes (their ETA scales by the
    rows run so far, `run.rest_eta`)."""
    if comp.mode.kind == "real" or comp.slurm:
        return {}
    known = json.loads(kept.read_text()) if kept and kept.exists() else {}
    known = {
        m: v if isinstance(v, dict) else {"overhead_s": v, "step_s": None} for m, v in known.items()
    }
    first = {split_arm(a)[0]: (a, n) for a, n in reversed(todo)}  # one trial per model
    for m, key in first.items():
        if m not in known:
            known[m] = runs.trial_run(comp.configs[key].to_dict())
    if kept:
        kept.write_text(json.dumps(known, indent=1) + "\n")
    return known


def work_ratios(comp: Comparison, known: dict[str, dict], profile: str) -> dict[str, float]:
    """Each arm's real step here (its model's trial) over the step its padding emulates at
    D = 1 (the profile's forward, backward and optimizer, and in local mode the arm's
    measured encoding, which is padded too): what `ComputeMode.dilation_for` scales D by.
    1 where either is unknown."""
    from dist_sqz.compute.profiles import compress_time, compute_times, load_profile

    prof = load_profile(profile) if profile else None
    ratios: dict[str, float] = {}
    for arm, n in comp.plan:
        model, label = split_arm(arm)
        real = (known.get(model) or {}).get("step_s")
        if prof is None or not real:
            ratios[arm] = 1.0
            continue
        cfg = comp.configs[arm, n]
        t = compute_times(prof, model, comp.mode.batch_size or cfg.batch_size, comp.mode.precision)
        padded = t["forward_s"] + t["backward_s"] + t["optimizer_s"]
        if comp.mode.kind == "local":
            padded += compress_time(t, label) or 0.0
        ratios[arm] = real / padded if padded > 0 else 1.0
    return ratios


def plan_rows(
    comp: Comparison, todo: list[tuple[str, int]], profile: str, known: dict[str, dict]
) -> list[dict[str, Any]]:
    """Each row's D from the trials (kept on `comp`), and the rows' expected wall time here
    (none where the cost model cannot take a model: the rows need no estimate)."""
    if comp.mode.kind != "real":
        comp.work_ratio = work_ratios(comp, known, profile)
    overhead = {a: (known.get(split_arm(a)[0]) or {}).get("overhead_s", 0.0) for a, _ in todo}
    dilations = {(a, n): comp.dilation(a, n) for a, n in todo}
    try:
        return estimate(
            comp.mode, comp.configs, comp.cfg.link, todo, profile, overhead, comp.emulate, dilations
        )
    except UsageError:
        if comp.cfg.estimate:
            raise
        return []

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

# Of the row's step: how late one worker's pad may be. A late pad delays its bucket's exchange
# and more where the worker's threads then compete: at 2.5% SqueezeNet 1.1 on 2 hosts came 7%
# under the cost model, at 1% within it, and AlexNet's late gradients still cost it no D.
LATE_ALLOW = 0.01

if TYPE_CHECKING:
    from dist_sqz.compare.run import Comparison


def trials(
    comp: Comparison, todo: list[tuple[str, int]], kept: Path | None = None
) -> dict[str, dict[str, float | None]]:
    """Each model's trial run (`runs.trial_run`: its per-run cost beyond its steps and its
    padded schedule), run here once per model left to run before any row, and kept in
    `kept` (a resumed comparison reads it back; an older comparison's file holds the
    overhead alone). None for real compute, which is neither padded nor estimated; for
    Slurm rows, where a trial on the login node says nothing of the nodes; and where D is
    given, so that there is no D to choose: their ETA after the first row scales by the rows
    run so far (`run.rest_eta`)."""
    if comp.mode.kind == "real" or comp.slurm or not comp.mode.adaptive:
        return {}
    known = json.loads(kept.read_text()) if kept and kept.exists() else {}
    known = {
        m: v if isinstance(v, dict) else {"overhead_s": v, "schedule": None}
        for m, v in known.items()
    }
    first = {split_arm(a)[0]: (a, n) for a, n in reversed(todo)}  # one trial per model
    for m, key in first.items():
        if m not in known:
            known[m] = runs.trial_run(comp.configs[key].to_dict(), comp.worker_env)
    if kept:
        kept.write_text(json.dumps(known, indent=1) + "\n")
    return known


def need_for(schedule: list[list[list[float]]] | None, step_s: float) -> float | None:
    """The D at which one worker's real work would overrun no pad by more than LATE_ALLOW of
    the row's step (the cost model's `step_s`, undilated), from a trial's schedule at D = 1:
    at D a pad due at `due` is reached `real / D - due` late (undilated), so D >= real / (due
    + LATE_ALLOW x step_s). AlexNet's gradients, late by tens of ms, matter little beside its
    seconds of exchange; SqueezeNet's, late by 3-5 ms, do. The median of the trial's steps;
    None without a schedule."""
    if not schedule:
        return None
    allow = LATE_ALLOW * step_s
    per_step = [max((real / (due + allow) for real, due in pads), default=0.0) for pads in schedule]
    return sorted(per_step)[len(per_step) // 2]


def needs(
    comp: Comparison, known: dict[str, dict], step_s: dict[tuple[str, int], float]
) -> dict[tuple[str, int], float | None]:
    """Each row's need (`need_for` its model's trial at the row's predicted step; where the
    cost model has no step for it, no pad may be late at all)."""
    return {
        (arm, n): need_for(
            (known.get(split_arm(arm)[0]) or {}).get("schedule"), step_s.get((arm, n), 0.0)
        )
        for arm, n in comp.plan
    }


def plan_rows(
    comp: Comparison, todo: list[tuple[str, int]], profile: str, known: dict[str, dict]
) -> list[dict[str, Any]]:
    """Each row's D from the trials (kept on `comp`), and the rows' expected wall time here
    (none where the cost model cannot take a model: the rows need no estimate)."""
    overhead = {a: (known.get(split_arm(a)[0]) or {}).get("overhead_s", 0.0) for a, _ in todo}
    args = (comp.mode, comp.configs, comp.cfg.link, todo, profile, overhead)
    try:  # each row's step first: D changes a row's wall time, not its (undilated) step
        steps = {(r["model"], r["world_size"]): r["step_s"] for r in estimate(*args)}
    except UsageError:
        if comp.cfg.estimate:
            raise
        steps = {}
    comp.need = needs(comp, known, steps)
    if not steps:
        return []
    return estimate(*args, {(a, n): comp.dilation(a, n) for a, n in todo})

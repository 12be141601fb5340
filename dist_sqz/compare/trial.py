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
        m: v if isinstance(v, dict) else {"overhead_s": v, "step_s": None, "need_d": None}
        for m, v in known.items()
    }
    first = {split_arm(a)[0]: (a, n) for a, n in reversed(todo)}  # one trial per model
    for m, key in first.items():
        if m not in known:
            known[m] = runs.trial_run(comp.configs[key].to_dict(), comp.worker_env)
    if kept:
        kept.write_text(json.dumps(known, indent=1) + "\n")
    return known


def needs(comp: Comparison, known: dict[str, dict]) -> dict[str, float | None]:
    """Each arm's trial `need_d` (its model's): the D one worker's real work needs here."""
    return {arm: (known.get(split_arm(arm)[0]) or {}).get("need_d") for arm, _ in comp.plan}


def plan_rows(
    comp: Comparison, todo: list[tuple[str, int]], profile: str, known: dict[str, dict]
) -> list[dict[str, Any]]:
    """Each row's D from the trials (kept on `comp`), and the rows' expected wall time here
    (none where the cost model cannot take a model: the rows need no estimate)."""
    comp.need = needs(comp, known)
    overhead = {a: (known.get(split_arm(a)[0]) or {}).get("overhead_s", 0.0) for a, _ in todo}
    dilations = {(a, n): comp.dilation(a, n) for a, n in todo}
    try:
        return estimate(comp.mode, comp.configs, comp.cfg.link, todo, profile, overhead, dilations)
    except UsageError:
        if comp.cfg.estimate:
            raise
        return []

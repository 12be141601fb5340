"""What a comparison derives from its rows: scaling efficiency against each model's 1-worker
row, the cost model's prediction beside it, the analytic bound, and the H100 projection of
time to accuracy."""

from __future__ import annotations

from dist_sqz.compute.modes import ComputeMode
from dist_sqz.config import CompareConfig
from dist_sqz.errors import UsageError
from dist_sqz.observe.metrics import scaling_efficiency
from dist_sqz.units import parse_rate


def analytic_efficiency(compute_s: float, sent_bytes: float, link_bps: float) -> float:
    """compute / (compute + sent / link): ring all-reduce with no overlap, bandwidth-bound."""
    return compute_s / (compute_s + sent_bytes * 8 / link_bps)


def derive(rows: list[dict], cfg: CompareConfig, mode: ComputeMode, emulate: bool) -> None:
    """Efficiency against the same arm's 1-worker row (else the model's uncompressed one);
    the cost model fed the same profile, link and compressor; with a target, the projection
    of time to accuracy onto an H100 cluster."""
    from dist_sqz.compute.profiles import load_profile
    from dist_sqz.costmodel import from_flags, predict
    from dist_sqz.costmodel.spec import load_spec

    link_bps = parse_rate(cfg.link)
    # The user's cluster where a spec is given, else the emulated hosts' links (TCP over the
    # shaped rate); real compute is priced from a profile measured on that cluster's GPU.
    net = load_spec(cfg.cluster) if cfg.cluster else from_flags(cfg.link)
    prof_name = mode.profile if mode.kind != "real" else cfg.profile
    prof = load_profile(prof_name) if prof_name else None
    h100 = load_profile("h100") if any(r.get("steps_to_accuracy") for r in rows) else None
    for row in rows:
        if row.get("error"):
            continue
        ones = [r for r in rows if r["world_size"] == 1 and not r.get("error")]
        comp = row.get("compression") or "none"
        base = next(
            (r for r in ones if r["model"] == row["model"] and r.get("compression") == comp),
            next(
                (
                    r
                    for r in ones
                    if r["model"] == row["model"] and (r.get("compression") or "none") == "none"
                ),
                None,
            ),
        )
        row["scaling_efficiency"] = (
            scaling_efficiency(row["images_per_s"], row["world_size"], base["images_per_s"])
            if base
            else None
        )
        row["analytic_efficiency"] = (
            analytic_efficiency(base["step_time_s"], row["sent_bytes"], link_bps)
            if base and emulate
            else None
        )
        batch = cfg.compute_batch_size if mode.kind == "profile" else None
        batch = row["batch_size"] if mode.kind == "real" else batch
        row["simulated_efficiency"] = None
        if prof is not None:
            precision = mode.precision if mode.kind != "real" else cfg.compute_precision
            b = batch or int(next(iter(prof["models"][row["model"]][precision])))
            bufs = bool(row.get("broadcast_buffers"))
            sim = predict([row["model"]], [row["world_size"]], net, prof, b, precision, comp, bufs)
            # Against the same base as the measured efficiency (the arm's own N = 1 row,
            # whose encoding runs too, else the model's uncompressed one).
            base_comp = (base or {}).get("compression") or "none"
            one = predict([row["model"]], [1], net, prof, b, precision, base_comp)[0]
            row["simulated_efficiency"] = scaling_efficiency(
                sim[0]["images_per_s"], row["world_size"], one["images_per_s"]
            )
            # What the profile knows of the encoding (None: unknown there).
            row["cost_model_compress_time_s"] = sim[0]["compress_time_s"]
        if row.get("steps_to_accuracy") and h100 is not None:
            try:
                step_s = predict(
                    [row["model"]],
                    [row["world_size"]],
                    net,
                    h100,
                    row["batch_size"],
                    "bf16_cl",
                    comp,
                )[0]["step_time_s"]
            except UsageError:  # a model the h100 profile does not hold: no projection
                continue
            row["h100_projected_time_to_accuracy_s"] = row["steps_to_accuracy"] * step_s

"""Does `dist-sqz simulate` predict what the emulated cluster measures?

For each model, link rate and host count, runs `dist-sqz compare` on emulated hosts with
emulated H100 compute (time-dilated, `--dilation`), and sets the measured median step time
next to the cost model's prediction for the same profile, batch, link and topology (ring,
latency 0: the emulated links add none). Target: within 10% everywhere.

    python benchmarks/validate_simulator.py [--hosts 2,4,8] [--links 100gbit,25gbit]
        [--models alexnet,squeezenet1_1] [--dilation 100] [--steps 6]

Needs root (network namespaces). Writes benchmarks/results/validate_simulator.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from dist_sqz.cluster import namespaces_permitted, parse_rate
from dist_sqz.compare import compare
from dist_sqz.simulate import Network, load_profile, simulate

IMAGE_SIZE = {"alexnet": 64}  # the real compute only has to fit in the padding


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="alexnet,squeezenet1_1")
    ap.add_argument("--hosts", default="2,4,8")
    ap.add_argument("--links", default="100gbit,25gbit")
    ap.add_argument("--profile", default="h100")
    ap.add_argument("--precision", default="bf16_cl")
    ap.add_argument("--batch-size", type=int, default=256, help="emulated per-GPU batch")
    ap.add_argument("--dilation", type=float, default=100.0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    ok, why = namespaces_permitted()
    if not ok:
        raise SystemExit(f"validate_simulator needs emulated hosts: {why}")
    hosts = [int(x) for x in args.hosts.split(",")]
    prof = load_profile(args.profile)
    work = Path(tempfile.mkdtemp(prefix="dsqz-validate-"))
    rows = []
    try:
        for link in args.links.split(","):
            net = Network(parse_rate(link) / 8, latency_s=0.0, topology="ring")
            for model in args.models.split(","):
                t0 = time.perf_counter()
                result = compare(
                    [model],
                    [1, *hosts],
                    args.steps + 2,
                    link,
                    work / f"{model}-{link}",
                    warmup=2,
                    image_size=IMAGE_SIZE.get(model, 32),
                    batch_size=2,
                    emulated=(args.profile, args.precision, args.batch_size, args.dilation),
                )
                predicted = simulate(
                    [model], [1, *hosts], net, prof, args.batch_size, args.precision
                )
                for m, p in zip(result["rows"], predicted, strict=True):
                    rows.append(
                        {
                            "model": model,
                            "link": link,
                            "world_size": m["world_size"],
                            "measured_step_s": m["step_time_s"],
                            "predicted_step_s": p["step_time_s"],
                            "error": m["step_time_s"] / p["step_time_s"] - 1,
                            "measured_efficiency": m["scaling_efficiency"],
                            "predicted_efficiency": p["scaling_efficiency"],
                            "wire_over_sent": m["wire_over_sent"],
                        }
                    )
                print(f"{model} on {link}: done in {time.perf_counter() - t0:.0f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "profile": args.profile,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "dilation": args.dilation,
        "steps": args.steps,
    }
    (out / "validate_simulator.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    worst = max(abs(r["error"]) for r in rows)
    lines = [
        f"Emulated {args.profile} ({args.precision}, batch {args.batch_size}/GPU), dilation "
        f"x{args.dilation:g}, ring all-reduce, {args.steps} measured steps. Worst |error| "
        f"{worst * 100:.1f}% (target 10%).",
        "",
        "| model | link | N | measured step ms | predicted ms | error | measured eff "
        "| predicted eff | wire/sent |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ws = "–" if r["wire_over_sent"] is None else f"{r['wire_over_sent']:.3f}"
        lines.append(
            f"| {r['model']} | {r['link']} | {r['world_size']} | "
            f"{r['measured_step_s'] * 1e3:.2f} | {r['predicted_step_s'] * 1e3:.2f} | "
            f"{r['error'] * 100:+.1f}% | {r['measured_efficiency']:.3f} | "
            f"{r['predicted_efficiency']:.3f} | {ws} |"
        )
    (out / "validate_simulator.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Does `dist-sqz simulate` predict what the emulated cluster measures?

For each model, link rate and host count, runs `dist-sqz compare` on emulated hosts with
emulated H100 compute (time-dilated, `--dilation`), and sets the measured median step time
next to the cost model's prediction for the same profile, batch, link and topology (ring).
Target: within 10% everywhere.

"predicted" is the cost model as `compare` and `simulate` use it (`dist_sqz.costmodel`, the
spec `simulate --link L` describes: TCP over the nominal link, 1448 payload bytes per 1514-byte
frame). Beside it, two references: the first model on a network measured as one would on a
real cluster ("fit": for each shaped link, `dist-sqz cluster bench` times bare all-reduces on
2 and 8 hosts and fits a per-hop latency a and an achieved bandwidth B; the fit never sees a
training run), and the first model on the nominal link ("ideal link"). "net of late": the
measured step less the emulator's own lateness (real work that overran the padding, which
is this machine's CPU, not the emulated GPU cluster).

    python benchmarks/validate_simulator.py [--hosts 2,4,8] [--links 100gbit,25gbit]
        [--models alexnet,squeezenet1_1] [--dilation alexnet=200,squeezenet1_1=100]
        [--steps 6]

The dilation must leave the real work of all hosts (on this machine's few cores) room inside
the padding: AlexNet's CPU optimizer step over 61 M parameters alone needs ~50 ms, against
D x 0.36 ms on the GPU, and 8 hosts run theirs at the same moment. So D grows with N past 4
hosts (AlexNet on 8 hosts runs at D = 400); `late` in the table shows what still overran.

Needs root (network namespaces). Writes benchmarks/results/validate_simulator.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from dist_sqz.cluster import namespaces_permitted
from dist_sqz.cluster.bench import bench_cluster
from dist_sqz.compare import compare, shaped_link
from dist_sqz.compute.profiles import load_profile
from dist_sqz.config import CompareConfig
from dist_sqz.costmodel import from_flags
from dist_sqz.costmodel.simulate import Network, simulate
from dist_sqz.observe.metrics import scaling_efficiency
from dist_sqz.units import parse_rate, parse_size

IMAGE_SIZE = {"alexnet": 64}  # the real compute only has to fit in the padding
BENCH_HOSTS = (2, 8)
BENCH_SIZES = ("4MB", "32MB")
SCALE_ABOVE = 4  # hosts


def parse_dilation(text: str, models: list[str]) -> dict[str, float]:
    """'200' -> every model at 200; 'alexnet=200,squeezenet1_1=100' -> per model."""
    if "=" not in text:
        return dict.fromkeys(models, float(text))
    pairs = dict(p.split("=", 1) for p in text.split(","))
    missing = [m for m in models if m not in pairs]
    if missing:
        raise SystemExit(f"--dilation names no value for {', '.join(missing)}")
    return {m: float(pairs[m]) for m in models}


def dilation_at(base: float, n: int) -> float:
    """Every emulated host's real work shares this machine's cores, so past 4 hosts D grows
    with N: the real work per core per second of padding then stays what it is at 4."""
    return base * max(1.0, n / SCALE_ABOVE)


def calibrate(shaped: str) -> dict:
    """Fit the ring model to bare all-reduces on the link as shaped (real seconds)."""
    t0 = time.perf_counter()
    fit = bench_cluster(BENCH_HOSTS, shaped, [parse_size(s) for s in BENCH_SIZES], reps=2)
    print(
        f"calibrated {shaped}: a = {fit['latency_s'] * 1e6:.0f} us/hop, B = "
        f"{fit['efficiency']:.3f} x link ({time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    return fit


def measure(model: str, n: int, link: str, d: float, args, work: Path) -> dict:
    """One `compare` run of `model` on n emulated hosts at dilation d: its result row."""
    t0 = time.perf_counter()
    cfg = CompareConfig(
        models=[model],
        workers=[n],
        steps=args.steps + 2,
        warmup_steps=2,
        link=link,
        image_size=IMAGE_SIZE.get(model, 32),
        batch_size=2,
        compute_profile=args.profile,
        compute_precision=args.precision,
        compute_batch_size=args.batch_size,
        dilation=d,
    )
    result = compare(cfg, work / f"{model}-{link}-n{n}")
    print(f"{model} x{n} on {link} (D={d:g}): {time.perf_counter() - t0:.0f}s", flush=True)
    return result["rows"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="alexnet,squeezenet1_1")
    ap.add_argument("--hosts", default="2,4,8")
    ap.add_argument("--links", default="100gbit,25gbit")
    ap.add_argument("--profile", default="h100")
    ap.add_argument("--precision", default="bf16_cl")
    ap.add_argument("--batch-size", type=int, default=256, help="emulated per-GPU batch")
    ap.add_argument(
        "--dilation",
        default="alexnet=200,squeezenet1_1=100",
        help=f"time dilation D up to {SCALE_ABOVE} hosts (x N/{SCALE_ABOVE} beyond): one "
        "number for every model, or model=D pairs",
    )
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument(
        "--render-only", action="store_true", help="rewrite the .md from the .json; run nothing"
    )
    args = ap.parse_args()
    if args.render_only:
        render(Path(args.out))
        return
    ok, why = namespaces_permitted()
    if not ok:
        raise SystemExit(f"validate_simulator needs emulated hosts: {why}")
    hosts = [int(x) for x in args.hosts.split(",")]
    models = args.models.split(",")
    dilation = parse_dilation(args.dilation, models)
    prof = load_profile(args.profile)
    work = Path(tempfile.mkdtemp(prefix="dsqz-validate-"))
    rows, fits = [], {}
    try:
        for model in models:
            single = measure(model, 1, args.links.split(",")[0], dilation[model], args, work)
            for link in args.links.split(","):
                rate_Bps = parse_rate(link) / 8
                ideal = Network(rate_Bps, latency_s=0.0, topology="ring")
                for n in [1, *hosts]:
                    d = dilation_at(dilation[model], n)
                    m = single if n == 1 else measure(model, n, link, d, args, work)
                    shaped = shaped_link(link, d)
                    if n > 1 and shaped not in fits:
                        fits[shaped] = calibrate(shaped)
                    fit = fits.get(shaped)
                    # The fit is in real time on the shaped link; the cluster it emulates
                    # runs D times faster in every respect.
                    net = (
                        Network(fit["bandwidth_Bps"] * d, fit["latency_s"] / d, "ring")
                        if fit
                        else ideal
                    )
                    spec = from_flags(link)
                    p = simulate([model], [1, n], spec, prof, args.batch_size, args.precision)[-1]
                    f = simulate([model], [1, n], net, prof, args.batch_size, args.precision)[-1]
                    q = simulate([model], [1, n], ideal, prof, args.batch_size, args.precision)[-1]
                    rows.append(
                        {
                            "model": model,
                            "link": link,
                            "world_size": n,
                            "dilation": d,
                            "measured_step_s": m["step_time_s"],
                            "predicted_step_s": p["step_time_s"],
                            "error": m["step_time_s"] / p["step_time_s"] - 1,
                            "fit_step_s": f["step_time_s"],
                            "fit_error": m["step_time_s"] / f["step_time_s"] - 1,
                            "ideal_link_step_s": q["step_time_s"],
                            "ideal_link_error": m["step_time_s"] / q["step_time_s"] - 1,
                            # Same per-worker batch, one definition everywhere.
                            "measured_efficiency": scaling_efficiency(
                                m["images_per_s"], n, single["images_per_s"]
                            ),
                            "predicted_efficiency": p["scaling_efficiency"],
                            "wire_over_sent": m["wire_over_sent"],
                            "emulation_late_s": m["emulation_late_s"],
                        }
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "profile": args.profile,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "dilation": dilation,
        "dilation_scales_above_hosts": SCALE_ABOVE,
        "steps": args.steps,
        "calibration": fits,
    }
    (out / "validate_simulator.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    render(out)


def render(out: Path) -> None:
    """validate_simulator.md from validate_simulator.json (`--render-only` redoes just this)."""
    doc = json.loads((out / "validate_simulator.json").read_text())
    rows, fits, dilation = doc["rows"], doc["calibration"], doc["dilation"]
    worst = max(abs(r["error"]) for r in rows)
    lines = [
        f"Emulated {doc['profile']} ({doc['precision']}, batch {doc['batch_size']}/GPU), "
        f"dilation {', '.join(f'{m} x{d:g}' for m, d in dilation.items())} up to "
        f"{SCALE_ABOVE} hosts (x N/{SCALE_ABOVE} beyond), ring all-reduce, {doc['steps']} "
        f"measured steps. Worst |error| {worst * 100:.1f}% (target 5%).",
        "",
        "Network fits (bare gloo all-reduces on "
        f"{' and '.join(map(str, BENCH_HOSTS))} hosts, sizes {', '.join(BENCH_SIZES)}; real "
        "time on the shaped link):",
        "",
        "| shaped link | latency a per hop | bandwidth B / link |",
        "|---|---:|---:|",
        *(
            f"| {parse_rate(s) / 1e6:g} Mbit/s | {f['latency_s'] * 1e6:.0f} us | "
            f"{f['efficiency']:.3f} |"
            for s, f in fits.items()
        ),
        "",
        "predicted: the cost model (TCP over the nominal link); fit: the first model on the "
        "fitted network; ideal link: the first model, nominal rate, zero latency. error = "
        "measured / predicted - 1. late: median real work per step that overran the padding, "
        "in emulated ms.",
        "",
        "| model | link | N | D | measured step ms | predicted ms | error | fit error "
        "| ideal link error | measured eff | predicted eff | wire/sent | late ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ws = "–" if r["wire_over_sent"] is None else f"{r['wire_over_sent']:.3f}"
        late = "–" if r["emulation_late_s"] is None else f"{r['emulation_late_s'] * 1e3:.2f}"
        lines.append(
            f"| {r['model']} | {r['link']} | {r['world_size']} | {r['dilation']:g} | "
            f"{r['measured_step_s'] * 1e3:.2f} | {r['predicted_step_s'] * 1e3:.2f} | "
            f"{r['error'] * 100:+.1f}% | {r['fit_error'] * 100:+.1f}% | "
            f"{r['ideal_link_error'] * 100:+.1f}% | {r['measured_efficiency']:.3f} | "
            f"{r['predicted_efficiency']:.3f} | {ws} | {late} |"
        )
    (out / "validate_simulator.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

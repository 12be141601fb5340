"""The emulated cluster held to the same cost model as the published rows, on its own network.

A user predicts a real cluster from a spec of what they measured there (docs/cost-model.md:
`dist-sqz cluster bench` or nccl-tests -> `dist-sqz cluster curve` -> a spec's busbw_curve).
This does the same for this project's emulated cluster. For every (shaped link, host count)
a committed emulated run used (results/compare_default, results/compare_dilated,
results/time_to_accuracy, results/validate_simulator), `measure` times bare gloo all-reduces
of the gradient buckets' sizes on freshly built emulated hosts (`cluster bench`: the link as
shaped, in real seconds). `emulated_rows` then predicts every committed row with one model:
on the nominal link (TCP framing, what `compare` and `simulate --link` use); on the network
as measured (its median bus bandwidth per size, x the run's dilation D back into emulated
seconds); and on that network with the emulator's lateness (real work that overran the
padding) added to every worker's compute: the prediction given the compute the emulated
hosts really did, the model deciding whether it was exposed. Error: see `error`.

    python benchmarks/emulated_network.py [--part measure|report|both] [--reps 5]

Needs root for `measure` (network namespaces); resumable (each (link, N) is written as it
finishes). Writes benchmarks/results/emulated_network.json; `benchmarks/published_scaling.py`
prints the rows beside the published ones.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from dist_sqz.compute.profiles import load_profile
from dist_sqz.costmodel import from_flags, predict
from dist_sqz.costmodel.curves import bench_busbw
from dist_sqz.costmodel.simulate import Network, simulate
from dist_sqz.units import format_rate, parse_rate, parse_size

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "emulated_network.json"
COMPARISONS = [
    ("compare (default run)", RESULTS / "compare_default"),
    ("compare (time_to_accuracy)", RESULTS / "time_to_accuracy"),
    # `dist-sqz compare --models squeezenet1_1 --workers 1,2,4,8 --link 1gbit --dilation 12`:
    # the default run's rows with twice its dilation at 8 workers (room on 2 cores for 8
    # hosts' gloo threads beside their real compute).
    ("compare (D = 12)", RESULTS / "compare_dilated"),
]
# Around the gradient buckets' sizes: squeezenet1_1's 2.0 and 2.9 MB, alexnet's 9.9 and
# 16.4 MB, and 64 MB (alexnet's 67 and 151 MB ones: the curve is flat past its largest point).
SIZES = ("1MB", "2MB", "4MB", "16MB", "64MB")


def runs() -> list[dict]:
    """Every committed emulated row at N >= 2 with what predicting it needs."""
    out = []
    for name, folder in COMPARISONS:
        if not (folder / "results.json").exists():
            continue
        res = json.loads((folder / "results.json").read_text())
        prof = load_profile(str(folder / "profile.json"))
        by = {(r["model"], r["world_size"]): r for r in res["rows"] if not r.get("error")}
        for (model, n), r in sorted(by.items()):
            one = by.get((model, 1))
            if n == 1 or one is None:
                continue
            out.append(
                {
                    "source": name,
                    "model": model,
                    "link": res["link"],
                    "world_size": n,
                    "dilation": r["dilation"],
                    "profile": prof,
                    "batch_size": r["batch_size"],
                    "precision": "fp32",
                    "measured_step_s": r["step_time_s"],
                    "one_step_s": one["step_time_s"],
                    "measured_efficiency": one["step_time_s"] / r["step_time_s"],
                    "late_s": r["emulation_late_s"] or 0.0,
                }
            )
    val = RESULTS / "validate_simulator.json"
    if val.exists():
        res = json.loads(val.read_text())
        prof = load_profile(res["profile"])
        for r in res["rows"]:
            if r["world_size"] > 1:
                out.append(
                    {
                        "source": "validate_simulator",
                        "model": r["model"],
                        "link": r["link"],
                        "world_size": r["world_size"],
                        "dilation": r["dilation"],
                        "profile": prof,
                        "batch_size": res["batch_size"],
                        "precision": res["precision"],
                        "measured_step_s": r["measured_step_s"],
                        "one_step_s": None,
                        "measured_efficiency": r["measured_efficiency"],
                        "late_s": r["emulation_late_s"] or 0.0,
                    }
                )
    return out


def shaped(run: dict) -> str:
    return format_rate(parse_rate(run["link"]) / run["dilation"])


def key(link: str, n: int) -> str:
    return f"{link}/{n}"


def measure(reps: int) -> None:
    """Bench every (shaped link, N) the rows used, at the sizes OUT does not hold yet."""
    from dist_sqz.cluster.bench import bench_cluster, fit_ring

    doc = json.loads(OUT.read_text()) if OUT.exists() else {"networks": {}}
    doc["sizes"] = SIZES
    todo = []
    for link, n in sorted({(shaped(r), r["world_size"]) for r in runs()}, key=lambda t: t[1]):
        held = {p["bytes"] for p in doc["networks"].get(key(link, n), {}).get("points", [])}
        sizes = [parse_size(s) for s in SIZES if parse_size(s) not in held]
        if sizes:
            todo.append((link, n, sizes))
    for i, (link, n, sizes) in enumerate(todo, 1):
        t0 = time.perf_counter()
        res = bench_cluster([n], link, sizes, reps=reps)
        old = doc["networks"].get(key(link, n), {}).get("points", [])
        res["points"] = sorted(old + res["points"], key=lambda p: p["bytes"])
        a, b = fit_ring([(n, p["bytes"], p["time_s"]) for p in res["points"]])
        res.update(latency_s=a, bandwidth_Bps=b, efficiency=b * 8 / parse_rate(link))
        doc["networks"][key(link, n)] = res
        OUT.write_text(json.dumps(doc, indent=1) + "\n")
        print(
            f"[{i}/{len(todo)}] {n} hosts on {link}: {time.perf_counter() - t0:.0f}s",
            flush=True,
        )


def measured_spec(run: dict, networks: dict):
    """The nominal spec with the inter-node level replaced by the measured median busbw,
    in emulated bytes per second (x D); None where that network was not measured."""
    bench = networks.get(key(shaped(run), run["world_size"]))
    if bench is None:
        return None
    points = bench_busbw(bench, run["world_size"], "median")
    base = from_flags(run["link"])
    curve = {f"{s}B": f"{b * run['dilation'] * 8:.0f}bit" for s, b in points.items()}
    return base.model_copy(update={"inter": base.inter.model_copy(update={"busbw_curve": curve})})


def error(run: dict, pred: dict, base_s: float) -> float:
    """A comparison's rows: predicted / measured scaling efficiency - 1, each against its
    own 1-worker step (the prediction's: `base_s`); validate_simulator's: measured /
    predicted step - 1."""
    ratio = run["measured_step_s"] / pred["step_time_s"] - 1
    if run["one_step_s"] is None:
        return ratio
    return (ratio + 1) * base_s / run["one_step_s"] - 1


def stretched(profile: dict, model: str, precision: str, factor: float) -> dict:
    """The profile with `model`'s compute at `precision` `factor` times as long."""
    out = copy.deepcopy(profile)
    for entry in out["models"][model][precision].values():
        for k in ("forward_s", "backward_s", "optimizer_s", "step_s"):
            if k in entry:
                entry[k] *= factor
    return out


def emulated_rows(networks: dict | None = None) -> list[dict]:
    """Each committed emulated row with the model's prediction on the nominal link and on
    the measured network (`measured_error`, None where not measured)."""
    if networks is None:
        networks = json.loads(OUT.read_text())["networks"] if OUT.exists() else {}
    out = []
    for r in runs():
        model, n = r["model"], r["world_size"]
        args = (r["profile"], r["batch_size"], r["precision"])
        nominal = predict([model], [n], from_flags(r["link"]), *args)[0]
        base = nominal["compute_time_s"]
        old = simulate([model], [n], Network(parse_rate(r["link"]) / 8, 0.0), *args)[0]
        spec = measured_spec(r, networks)
        on_net = late_too = None
        if spec is not None:
            on_net = predict([model], [n], spec, *args)[0]
            longer = stretched(r["profile"], model, r["precision"], 1 + r["late_s"] / base)
            late_too = predict([model], [n], spec, longer, *args[1:])[0]
        out.append(
            {
                **{k: r[k] for k in ("source", "model", "link", "world_size", "dilation")},
                "measured_efficiency": r["measured_efficiency"],
                "predicted_efficiency": nominal["scaling_efficiency"],
                "error": error(r, nominal, base),
                "late_share": r["late_s"] / r["measured_step_s"],
                "old_error": error(r, old, base),
                "measured_error": error(r, on_net, base) if on_net else None,
                "late_as_compute_error": error(r, late_too, base) if late_too else None,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("measure", "report", "both"), default="both")
    ap.add_argument("--reps", type=int, default=5, help="timed all-reduces per size")
    args = ap.parse_args()
    if args.part in ("measure", "both"):
        measure(args.reps)
    if args.part in ("report", "both"):
        for e in emulated_rows():
            m, late = e["measured_error"], e["late_as_compute_error"]
            on_net = "-" if m is None else f"{m:+.1%} (late as compute {late:+.1%})"
            print(
                f"{e['source']:28} {e['model']:14} {e['link']:8} N={e['world_size']}: "
                f"nominal {e['error']:+.1%}  measured network {on_net}"
            )


if __name__ == "__main__":
    main()

"""Does the cost model predict real clusters' published scaling?

For each published row (a single-GPU throughput and an N-GPU throughput on a named system),
builds a profile from the row's own single-GPU figure (`dist-sqz profile --published`'s
function: step = batch / images_per_s, split 1:2 between forward and backward), predicts
the N-GPU throughput on the system's shipped cluster spec (`costmodel/cluster_data/`), and
prints the error beside the old model's (nominal link rate per worker, a flat ring, ideal
overlap, no overheads: `simulate`'s model before cluster specs).

The published figures are inputs with their sources (ROWS); nothing here is fitted to them.

    python benchmarks/published_scaling.py [--out benchmarks/results]

Writes published_scaling.json and .md. Runs in seconds (shape-only models).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from dist_sqz.compute.profiles import published_profile
from dist_sqz.costmodel import load_spec, predict
from dist_sqz.costmodel.simulate import Network, simulate
from dist_sqz.observe.markdown import table
from dist_sqz.units import parse_rate

HOROVOD = "Horovod README, 2017 (TF + Horovod, tf_cnn_benchmarks, synthetic data, batch 64)"
NVIDIA = "NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5 README (release 21.03)"
ONEFLOW = "OneFlow DLPerf v1.0 (2020), NVIDIA's PyTorch ResNet-50 v1.5 with DDP"
HOROVOD_SCALE = (
    "Horovod docs/benchmarks: 32 (then 128) servers of 4 Pascal GPUs on RoCE-capable 25 Gbit/s; "
    "scaling efficiency 90% Inception V3, 90% ResNet-101, 79% (68% at 512 GPUs) VGG-16; "
    "N-GPU images/s = efficiency x N x the README's 1-GPU figures"
)
HOROVOD_1GPU = {"inception_v3": 134.4, "resnet101": 119.4, "vgg16": 130.9}


def from_efficiency(n: int, efficiency: dict[str, float]) -> dict[int, dict[str, float]]:
    return {n: {m: e * n * HOROVOD_1GPU[m] for m, e in efficiency.items()}}


# (setup, source, spec, precision, batch/GPU, {model: 1-GPU images/s}, {N: {model: images/s}})
# fmt: off
ROWS = [
    ("Horovod, RoCE 25 Gbit/s", HOROVOD, "horovod2017-roce25", "fp32", 64, HOROVOD_1GPU,
     {16: {"inception_v3": 2022.6, "resnet101": 1746.2, "vgg16": 1787.4}}),
    ("Horovod at scale, RoCE 25 Gbit/s", HOROVOD_SCALE, "horovod2017-roce25", "fp32", 64,
     HOROVOD_1GPU,
     {**from_efficiency(128, {"inception_v3": 0.90, "resnet101": 0.90, "vgg16": 0.79}),
      **from_efficiency(512, {"inception_v3": 0.90, "resnet101": 0.90, "vgg16": 0.68})}),
    ("Horovod, TCP 25 Gbit/s", HOROVOD, "horovod2017-tcp25", "fp32", 64, HOROVOD_1GPU,
     {16: {"inception_v3": 1990.7, "resnet101": 1685.1, "vgg16": 1308.7}}),
    ("Horovod, TCP 40 Gbit/s", HOROVOD, "horovod2017-tcp40", "fp32", 64,
     {"inception_v3": 148.8, "resnet101": 136.0, "vgg16": 149.6},
     {64: {"inception_v3": 7932.1, "resnet101": 7741.6, "vgg16": 6084.2}}),
    ("DGX-1 V100, FP32", NVIDIA, "dgx1-v100", "fp32", 112, {"resnet50": 367},
     {8: {"resnet50": 2855}}),
    ("DGX-1 V100, AMP", NVIDIA, "dgx1-v100", "amp", 256, {"resnet50": 1200},
     {8: {"resnet50": 8322}}),
    ("DGX A100, TF32", NVIDIA, "dgx-a100", "tf32", 256, {"resnet50": 938},
     {8: {"resnet50": 7248}}),
    ("DGX A100, AMP", NVIDIA, "dgx-a100", "amp", 256, {"resnet50": 2470},
     {8: {"resnet50": 16621}}),
    ("V100 nodes + EDR IB, FP32", ONEFLOW, "dgx1-v100", "fp32", 128, {"resnet50": 367.29},
     {8: {"resnet50": 2887.65}, 16: {"resnet50": 5716.79}, 32: {"resnet50": 10917.09}}),
    ("V100 nodes + EDR IB, AMP", ONEFLOW, "dgx1-v100", "amp", 256, {"resnet50": 802.9},
     {8: {"resnet50": 6154.66}, 16: {"resnet50": 11991.94}, 32: {"resnet50": 22551.16}}),
]
# fmt: on


def old_model(spec, n: int) -> Network:
    """What a user of the old model typed: the node's NIC (or, on one node, the GPU's
    fabric) as every worker's link, nominal rate, a flat ring."""
    one_node = n <= spec.gpus_per_node
    rate = spec.intra.line_rate if one_node else spec.inter.nic_rate
    return Network(bandwidth_Bps=parse_rate(rate) / 8, latency_s=5e-6)


STAGES = ("nodes", "achieved bandwidth", "latency + overhead", "framework", "interference")


def staged(spec) -> list:
    """The spec with its terms turned on one at a time: the node structure alone (every
    level at line rate, no latency, plain DDP buckets, no interference), then the achieved
    bandwidth, latency and per-collective overhead, the framework, interference."""
    ideal_intra = spec.intra.model_copy(
        update={"achieved": 1.0, "busbw_curve": {}, "latency": "0us"}
    )
    ideal_inter = spec.inter.model_copy(
        update={"achieved": 1.0, "flow_cap": "0bit", "busbw_curve": {}, "latency": "0us"}
    )
    plain = spec.model_copy(
        update={
            "intra": ideal_intra,
            "inter": ideal_inter,
            "collective": spec.collective.model_copy(update={"overhead": "0us"}),
            "framework": type(spec.framework)(),
            "interference": 0.0,
        }
    )
    bandwidth = plain.model_copy(
        update={
            "intra": spec.intra.model_copy(update={"latency": "0us"}),
            "inter": spec.inter.model_copy(update={"latency": "0us"}),
        }
    )
    latency = bandwidth.model_copy(
        update={"intra": spec.intra, "inter": spec.inter, "collective": spec.collective}
    )
    framework = latency.model_copy(update={"framework": spec.framework})
    return [plain, bandwidth, latency, framework, spec]


def evaluate() -> list[dict]:
    out = []
    for setup, source, spec_name, precision, batch, single, multi in ROWS:
        spec = load_spec(spec_name)
        prof = published_profile(single, batch, precision, setup, source=source)
        for n, published in multi.items():
            for model, ips in published.items():
                new = predict([model], [n], spec, prof, batch, precision)[0]
                steps = [
                    predict([model], [n], v, prof, batch, precision)[0]["images_per_s"] / ips - 1
                    for v in staged(spec)
                ]
                old = simulate([model], [n], old_model(spec, n), prof, batch, precision)[0]
                nodes = -(-n // spec.gpus_per_node)
                out.append(
                    {
                        "setup": setup,
                        "source": source,
                        "cluster": spec_name,
                        "scope": "intra-node" if nodes == 1 else "inter-node",
                        "model": model,
                        "precision": precision,
                        "batch_size": batch,
                        "world_size": n,
                        "single_gpu_images_per_s": single[model],
                        "published_images_per_s": ips,
                        "published_efficiency": ips / (n * single[model]),
                        "predicted_images_per_s": new["images_per_s"],
                        "predicted_efficiency": new["scaling_efficiency"],
                        "error": new["images_per_s"] / ips - 1,
                        "old_images_per_s": old["images_per_s"],
                        "old_error": old["images_per_s"] / ips - 1,
                        "exposed_comm_ms": new["exposed_comm_s"] * 1e3,
                        "comm_ms": new["comm_time_s"] * 1e3,
                        "step_ms": new["step_time_s"] * 1e3,
                        # published step minus predicted: what the model leaves unexplained
                        "gap_ms": (n * batch / ips - new["step_time_s"]) * 1e3,
                        "error_by_stage": dict(zip(STAGES, steps, strict=True)),
                    }
                )
    return out


def pct(x: float) -> str:
    return f"{x:+.1%}"


def opt_pct(x: float | None) -> str:
    return "–" if x is None else pct(x)


def columns(spec: list[tuple[str, str, object]], rows: list[dict]) -> list[str]:
    """A Markdown table from (header, 'l'|'r', row -> cell) triples."""
    return table(
        [h for h, _, _ in spec],
        [[f(r) for _, _, f in spec] for r in rows],
        "".join(a for _, a, _ in spec),
    )


PUBLISHED_COLUMNS = [
    ("setup", "l", lambda r: r["setup"]),
    ("spec", "l", lambda r: r["cluster"]),
    ("model", "l", lambda r: r["model"]),
    ("N", "r", lambda r: r["world_size"]),
    ("published img/s", "r", lambda r: f"{r['published_images_per_s']:,.1f}"),
    ("eff", "r", lambda r: f"{r['published_efficiency']:.3f}"),
    ("predicted img/s", "r", lambda r: f"{r['predicted_images_per_s']:,.1f}"),
    ("eff", "r", lambda r: f"{r['predicted_efficiency']:.3f}"),
    ("error", "r", lambda r: pct(r["error"])),
    ("old error", "r", lambda r: pct(r["old_error"])),
    ("comm ms", "r", lambda r: f"{r['comm_ms']:.1f}"),
    ("exposed ms", "r", lambda r: f"{r['exposed_comm_ms']:.1f}"),
    ("gap ms", "r", lambda r: f"{r['gap_ms']:+.1f}"),
]
STAGE_COLUMNS = [
    ("setup", "l", lambda r: r["setup"]),
    ("model", "l", lambda r: r["model"]),
    ("N", "r", lambda r: r["world_size"]),
    ("old", "r", lambda r: pct(r["old_error"])),
    *((k, "r", lambda r, k=k: pct(r["error_by_stage"][k])) for k in STAGES),
]
EMULATED_COLUMNS = [
    ("source", "l", lambda e: e["source"]),
    ("model", "l", lambda e: e["model"]),
    ("link", "l", lambda e: e["link"]),
    ("N", "r", lambda e: e["world_size"]),
    ("measured eff", "r", lambda e: f"{e['measured_efficiency']:.3f}"),
    ("predicted eff", "r", lambda e: f"{e['predicted_efficiency']:.3f}"),
    ("error", "r", lambda e: pct(e["error"])),
    ("old error", "r", lambda e: pct(e["old_error"])),
    ("on measured network", "r", lambda e: opt_pct(e["measured_error"])),
    ("late", "r", lambda e: f"{e['late_share']:.1%}"),
    ("late as compute", "r", lambda e: opt_pct(e["late_as_compute_error"])),
]


def summary(errs: list[float], old: list[float]) -> str:
    mean = statistics.mean
    return (
        f"mean |error| {mean(abs(e) for e in errs):.1%} (old model "
        f"{mean(abs(e) for e in old):.1%}); worst {max(errs, key=abs):+.1%} (old "
        f"{max(old, key=abs):+.1%}); {sum(abs(e) <= 0.05 for e in errs)} of {len(errs)} "
        f"within 5%; mean signed error {mean(errs):+.1%}."
    )


EMULATED_TEXT = (
    "The same model against this project's emulated cluster (`benchmarks/emulated_network.py`): "
    "the committed comparisons (`results/compare_default`, `dist-sqz compare --models "
    "alexnet,squeezenet1_1 --workers 1,2,4,8`; `results/compare_dilated`, squeezenet1_1 the "
    "same at `--dilation 12`; `results/time_to_accuracy`; all local compute; error = "
    "predicted / measured scaling efficiency - 1) and `validate_simulator`'s rows (emulated "
    "H100 compute; error = measured / predicted step - 1). *error*: on the "
    "nominal link, TCP framing (`from_flags`, what `compare` and `simulate --link` use). *on "
    "measured network*: the same model on a spec whose network is the one measured for that "
    "row (`cluster bench` on the link as shaped at that host count, median busbw per size, x "
    "the run's dilation; `cluster curve --time median` writes it). *late*: the emulator's "
    "lateness (real work that overran the padding, a share of the step). *late as compute*: "
    "the measured network, with that lateness added to each worker's compute (the model "
    "given the compute the emulated hosts really did, on this machine's 2 cores)."
)


def render(rows: list[dict], emulated: list[dict]) -> str:
    lines = [
        "# The cost model against published scaling",
        "",
        "Each row: a published N-GPU throughput, and the cost model's prediction from the "
        "row's own single-GPU throughput (`profile --published`, split 1:2) on the system's "
        "shipped cluster spec. *old*: the model before cluster specs (every worker on the "
        "nominal NIC or fabric rate, flat ring, ideal overlap, no overheads). Error = "
        "predicted / published - 1. *gap ms*: published step time minus predicted: what the "
        "model does not explain. Sources: the `ROWS` of `benchmarks/published_scaling.py`; "
        "each spec's `sources`.",
        "",
    ]
    for scope in ("intra-node", "inter-node"):
        mine = [r for r in rows if r["scope"] == scope]
        lines += [f"## {scope} rows", "", *columns(PUBLISHED_COLUMNS, mine), ""]
        lines += [
            f"{scope}: " + summary([r["error"] for r in mine], [r["old_error"] for r in mine]),
            "",
        ]
    lines += [
        "## What moved each row",
        "",
        "Error with the spec's terms turned on one at a time (cumulative, left to right): "
        "*nodes* = GPUs per node and NICs per node at line rate, plain DDP buckets; then the "
        "achieved bandwidth (and TCP's flow cap), the latencies and per-collective overhead, "
        "the framework (Horovod's cycle and fusion buffer, DDP's own cost per step), and "
        "interference (the last is the full model).",
        "",
        *columns(STAGE_COLUMNS, rows),
        "",
    ]
    if emulated:
        lines += ["## The emulated cluster, same model", "", EMULATED_TEXT, ""]
        lines += [*columns(EMULATED_COLUMNS, emulated), ""]
        old = [e["old_error"] for e in emulated]
        lines += ["Emulated rows, nominal link: " + summary([e["error"] for e in emulated], old)]
        for key, what in (
            ("measured_error", "on the measured network"),
            ("late_as_compute_error", "on the measured network, late as compute"),
        ):
            errs = [e[key] for e in emulated if e[key] is not None]
            if errs:
                lines += ["", f"Emulated rows, {what}: " + summary(errs, old)]
        lines += [""]
    lines.append(
        "Published rows, in all: "
        + summary([r["error"] for r in rows], [r["old_error"] for r in rows])
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    rows = evaluate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from emulated_network import emulated_rows  # beside this script (benchmarks/)

    emulated = emulated_rows()
    doc = {"published": rows, "emulated": emulated}
    (out / "published_scaling.json").write_text(json.dumps(doc, indent=1) + "\n")
    text = render(rows, emulated)
    (out / "published_scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

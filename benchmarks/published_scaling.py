"""Does the cost model predict real clusters' published scaling?

For each published row (a single-GPU throughput and an N-GPU throughput on a named system),
builds a profile from the row's own single-GPU figure (`dist-sqz profile --published`'s
function: step = batch / images_per_s, split 1:2 between forward and backward), predicts
the N-GPU throughput on the system's shipped cluster spec (`dist_sqz/cluster_data/`), and
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

from dist_sqz.costmodel import load_spec, predict
from dist_sqz.markdown import table
from dist_sqz.profiles import published_profile
from dist_sqz.simulate import Network, simulate
from dist_sqz.units import parse_rate

HOROVOD = "Horovod README, 2017 (TF + Horovod, tf_cnn_benchmarks, synthetic data, batch 64)"
NVIDIA = "NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5 README (release 21.03)"
ONEFLOW = "OneFlow DLPerf v1.0 (2020), NVIDIA's PyTorch ResNet-50 v1.5 with DDP"

# (setup, source, spec, precision, batch/GPU, {model: 1-GPU images/s}, {N: {model: images/s}})
ROWS = [
    (
        "Horovod, RoCE 25 Gbit/s",
        HOROVOD,
        "horovod2017-roce25",
        "fp32",
        64,
        {"inception_v3": 134.4, "resnet101": 119.4, "vgg16": 130.9},
        {16: {"inception_v3": 2022.6, "resnet101": 1746.2, "vgg16": 1787.4}},
    ),
    (
        "Horovod, TCP 25 Gbit/s",
        HOROVOD,
        "horovod2017-tcp25",
        "fp32",
        64,
        {"inception_v3": 134.4, "resnet101": 119.4, "vgg16": 130.9},
        {16: {"inception_v3": 1990.7, "resnet101": 1685.1, "vgg16": 1308.7}},
    ),
    (
        "Horovod, TCP 40 Gbit/s",
        HOROVOD,
        "horovod2017-tcp40",
        "fp32",
        64,
        {"inception_v3": 148.8, "resnet101": 136.0, "vgg16": 149.6},
        {64: {"inception_v3": 7932.1, "resnet101": 7741.6, "vgg16": 6084.2}},
    ),
    (
        "DGX-1 V100, FP32",
        NVIDIA,
        "dgx1-v100",
        "fp32",
        112,
        {"resnet50": 367},
        {8: {"resnet50": 2855}},
    ),
    (
        "DGX-1 V100, AMP",
        NVIDIA,
        "dgx1-v100",
        "amp",
        256,
        {"resnet50": 1200},
        {8: {"resnet50": 8322}},
    ),
    ("DGX A100, TF32", NVIDIA, "dgx-a100", "tf32", 256, {"resnet50": 938}, {8: {"resnet50": 7248}}),
    ("DGX A100, AMP", NVIDIA, "dgx-a100", "amp", 256, {"resnet50": 2470}, {8: {"resnet50": 16621}}),
    (
        "V100 nodes + EDR IB, FP32",
        ONEFLOW,
        "dgx1-v100",
        "fp32",
        128,
        {"resnet50": 367.29},
        {8: {"resnet50": 2887.65}, 16: {"resnet50": 5716.79}, 32: {"resnet50": 10917.09}},
    ),
    (
        "V100 nodes + EDR IB, AMP",
        ONEFLOW,
        "dgx1-v100",
        "amp",
        256,
        {"resnet50": 802.9},
        {8: {"resnet50": 6154.66}, 16: {"resnet50": 11991.94}, 32: {"resnet50": 22551.16}},
    ),
]


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


def render(rows: list[dict]) -> str:
    lines = [
        "# The cost model against published scaling",
        "",
        "Each row: a published N-GPU throughput, and the cost model's prediction from the "
        "row's own single-GPU throughput (`profile --published`, split 1:2) on the system's "
        "shipped cluster spec. *old*: the model before cluster specs (every worker on the "
        "nominal NIC or fabric rate, flat ring, ideal overlap, no overheads). Error = "
        "predicted / published - 1. Sources: the `ROWS` of `benchmarks/published_scaling.py`; "
        "each spec's `sources`.",
        "",
    ]
    for scope in ("intra-node", "inter-node"):
        mine = [r for r in rows if r["scope"] == scope]
        lines += [f"## {scope} rows", ""]
        lines.extend(
            table(
                [
                    "setup",
                    "spec",
                    "model",
                    "N",
                    "published img/s",
                    "eff",
                    "predicted img/s",
                    "eff",
                    "error",
                    "old error",
                    "comm ms",
                    "exposed ms",
                ],
                [
                    [
                        r["setup"],
                        r["cluster"],
                        r["model"],
                        r["world_size"],
                        f"{r['published_images_per_s']:,.1f}",
                        f"{r['published_efficiency']:.3f}",
                        f"{r['predicted_images_per_s']:,.1f}",
                        f"{r['predicted_efficiency']:.3f}",
                        pct(r["error"]),
                        pct(r["old_error"]),
                        f"{r['comm_ms']:.1f}",
                        f"{r['exposed_comm_ms']:.1f}",
                    ]
                    for r in mine
                ],
                "lllrrrrrrrrr",
            )
        )
        lines.append("")
    lines += [
        "## What moved each row",
        "",
        "Error with the spec's terms turned on one at a time (cumulative, left to right): "
        "*nodes* = GPUs per node and NICs per node at line rate, plain DDP buckets; then the "
        "achieved bandwidth (and TCP's flow cap), the latencies and per-collective overhead, "
        "the framework (Horovod's cycle and fusion buffer, DDP's own cost per step), and "
        "interference (the last is the full model). *gap ms*: published step time minus "
        "predicted, per step: what the model does not explain.",
        "",
    ]
    lines.extend(
        table(
            ["setup", "model", "N", "old", *STAGES],
            [
                [
                    r["setup"],
                    r["model"],
                    r["world_size"],
                    pct(r["old_error"]),
                    *(pct(r["error_by_stage"][k]) for k in STAGES),
                ]
                for r in rows
            ],
            "lllrrrrrr",
        )
    )
    lines.append("")
    errs = [r["error"] for r in rows]
    old = [r["old_error"] for r in rows]
    within = sum(abs(e) <= 0.05 for e in errs)
    lines.append(
        f"Mean |error| {statistics.mean(abs(e) for e in errs):.1%} (old model "
        f"{statistics.mean(abs(e) for e in old):.1%}); worst {max(errs, key=abs):+.1%} (old "
        f"{max(old, key=abs):+.1%}); {within} of {len(rows)} rows within 5%; mean signed "
        f"error {statistics.mean(errs):+.1%}."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    rows = evaluate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "published_scaling.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = render(rows)
    (out / "published_scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""The shipped `h100` profile from what a GPU session measured (`benchmarks/gpu_session.sh`).

Reads the profiles `dist-sqz profile` wrote on the GPU (224 px: eager fp32 and bf16 +
channels_last with each compressor's encoding; the compiled entries) and writes
`dist_sqz/compute/profile_data/h100.json`: every measured model's entries replace the derived ones;
models the session did not measure keep their derived entries, listed under `derived` with
the split they were derived by (from `benchmarks/results/gpu/h100_derived.json`, the profile
as shipped before any GPU was lent). Prints, per model, precision and batch, the measured step
against the derived one and the measured backward:forward ratio (the derived file assumed 2).

    python benchmarks/gpu_profile.py [--measured benchmarks/results/gpu/profile_224.json]
        [--compiled benchmarks/results/gpu/profile_compile.json]

tests/test_costmodel_compression.py checks that the shipped file is this merge.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "dist_sqz" / "compute" / "profile_data" / "h100.json"
RESULTS = ROOT / "benchmarks" / "results" / "gpu"
# merged()'s inputs, in its order: the derived profile, the measured one, the compiled one
DEFAULT_INPUTS = ("h100_derived.json", "profile_224.json", "profile_compile.json")
SESSION = {  # what the session's log printed of the machine (benchmarks/results/gpu/)
    "date": "2026-11-26",
    "gpu": "NVIDIA H100 80GB HBM3, driver 580.159.04, 81559 MiB, SM clock up to 1980 MHz",
    "software": "Python 3.12.3, torch 2.11.0+cu130, CUDA 13.0, cuDNN 9.19.0, NCCL 2.28.9",
}


def merged(old: dict, measured: dict, compiled: dict | None) -> dict:
    """The new profile: `measured`'s models (and `compiled`'s +compile entries) over the
    derived profile `old`."""
    models = copy.deepcopy(measured["models"])
    for model, precisions in (compiled or {}).get("models", {}).items():
        for key, batches in precisions.items():
            if key.endswith("+compile") and model in models:
                models[model][key] = batches
    derived = {m: e for m, e in old["models"].items() if m not in models}
    return {
        "device": measured["device"],
        "image_size": measured.get("image_size", 224),
        "source": f"measured {SESSION['date']} by benchmarks/gpu_session.sh on one "
        f"{SESSION['gpu']}; {SESSION['software']}; raw files in benchmarks/results/gpu/",
        "method": measured["method"] + "; bf16_cl = bf16 autocast + channels_last; "
        "compress_s: `dist-sqz profile --compression` (a one-rank nccl group, per step)",
        "torch": measured.get("torch", ""),
        "measured": sorted(models),
        "derived": {"models": sorted(derived), "source": old["source"], "split": old["split"]},
        "models": {**models, **derived},
    }


def table(old: dict, new: dict) -> list[str]:
    lines = [
        "model          precision          batch  measured ms  derived ms  ratio  bwd:fwd",
    ]
    for model in new["measured"]:
        for key, batches in new["models"][model].items():
            for batch, e in batches.items():
                was = old["models"].get(model, {}).get(key, {}).get(batch)
                before = f"{was['step_s'] * 1e3:10.2f}" if was else f"{'-':>10}"
                ratio = f"{e['step_s'] / was['step_s']:5.3f}" if was else f"{'-':>5}"
                lines.append(
                    f"{model:<14} {key:<18} {batch:>5}  {e['step_s'] * 1e3:11.2f}  {before}  "
                    f"{ratio}  {e['backward_s'] / e['forward_s']:7.2f}"
                )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    derived, measured, compiled = (str(RESULTS / f) for f in DEFAULT_INPUTS)
    p.add_argument("--derived", default=derived, help="the profile as derived before (kept)")
    p.add_argument("--measured", default=measured, help="dist-sqz profile's output on the GPU")
    p.add_argument("--compiled", default=compiled, help="its --compile output ('' for none)")
    args = p.parse_args()
    old = json.loads(Path(args.derived).read_text())
    measured = json.loads(Path(args.measured).read_text())
    compiled = json.loads(Path(args.compiled).read_text()) if args.compiled else None
    new = merged(old, measured, compiled)
    print("\n".join(table(old, new)))
    SHIPPED.write_text(json.dumps(new, indent=1) + "\n")
    print(f"wrote {SHIPPED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

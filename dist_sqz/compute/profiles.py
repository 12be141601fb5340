"""Compute profiles: forward, backward and optimizer seconds per model, precision and batch.

A profile is a JSON file (what `dist-sqz profile` writes) named either by a path ending in
`.json` or by the name of one shipped with the package (`h100`), read through
importlib.resources so a wheel or a non-editable install has them too. `compute_times`
answers one (model, batch, precision) query, interpolating linearly in the batch size.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from dist_sqz.errors import UsageError

PHASES = ("forward_s", "backward_s", "optimizer_s")
_PACKAGE_DATA = "dist_sqz.compute.profile_data"


def shipped() -> list[str]:
    """Names of the profiles that ship with the package."""
    root = resources.files(_PACKAGE_DATA)
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def _read(name: str) -> tuple[str, str]:
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"profile file {name!r} not found")
        return str(path), path.read_text()
    if name not in shipped():
        raise UsageError(
            f"no profile {name!r}; shipped: {', '.join(shipped())} (or a path to a .json file "
            "written by `dist-sqz profile`)"
        )
    return name, resources.files(_PACKAGE_DATA).joinpath(f"{name}.json").read_text()


def load_profile(name: str) -> dict[str, Any]:
    """Read and validate a profile; UsageError names what is wrong with it."""
    where, text = _read(name)
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"profile {where} is not valid JSON (line {e.lineno})") from None
    models = profile.get("models") if isinstance(profile, dict) else None
    if not isinstance(models, dict) or not models:
        raise UsageError(f"profile {where} has no 'models' table; write one with dist-sqz profile")
    for model, precisions in models.items():
        for precision, batches in precisions.items():
            for batch, entry in batches.items():
                bad = [k for k in PHASES if not isinstance(entry.get(k), (int, float))]
                if not str(batch).isdigit() or bad:
                    raise UsageError(
                        f"profile {where}: {model}/{precision}/{batch} needs a positive batch "
                        f"size and numbers for {', '.join(PHASES)}"
                    )
    profile.setdefault("name", where)
    return profile


def profile_image_size(profile: dict, model: str) -> int:
    """The input size `model`'s times in `profile` were measured at (224 if it does not say).

    Gradient-ready shares split the profile's backward time by multiply-adds, so they must be
    counted at this size: at 64 px AlexNet's classifier does 60% of the multiply-adds, at
    224 px 8%.
    """
    sizes = profile.get("image_sizes")
    if isinstance(sizes, dict) and model in sizes:
        return int(sizes[model])
    return int(profile.get("image_size", 224))


def compute_times(profile: dict, model: str, batch_size: int, precision: str) -> dict[str, float]:
    """{forward_s, backward_s, optimizer_s, ...} of `model` at `batch_size` and `precision`."""
    entries = profile.get("models", {}).get(model, {}).get(precision)
    if not entries:
        raise UsageError(
            f"profile {profile.get('name', profile.get('device', '?'))} has no {model} at "
            f"precision {precision}; measure it with `dist-sqz profile --models {model}`"
        )
    if str(batch_size) in entries:
        return entries[str(batch_size)]
    # Linear in batch size between (or beyond) the two nearest measured sizes.
    sizes = sorted(int(b) for b in entries)
    # Times only: a compressor's encoding (`compress_s`) follows the gradients' size, not the
    # batch, and is taken as measured.
    if len(sizes) == 1:
        scale = batch_size / sizes[0]
        e0 = entries[str(sizes[0])]
        return {k: v * scale if _is_time(v) else v for k, v in e0.items()}
    lo, hi = (sizes[0], sizes[1]) if batch_size < sizes[0] else (sizes[-2], sizes[-1])
    for a, b in zip(sizes, sizes[1:], strict=False):
        if a <= batch_size <= b:
            lo, hi = a, b
    t = (batch_size - lo) / (hi - lo)
    e0, e1 = entries[str(lo)], entries[str(hi)]
    return {k: max(0.0, e0[k] + t * (e1[k] - e0[k])) if _is_time(e0[k]) else e0[k] for k in e0}


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compress_time(entry: dict, label: str) -> float | None:
    """Seconds per step a compressor variant spends encoding and decoding, where the profile
    measured it (`compress_s` beside the phases of `entry`, what `compute_times` answered);
    0 for none; None where unknown (a profile must not be made to say what it did not
    measure)."""
    if label == "none":
        return 0.0
    value = (entry.get("compress_s") or {}).get(label)
    return float(value) if isinstance(value, (int, float)) else None


NATIVE_IMAGE_SIZE = {"inception_v3": 299}  # the rest: 224


def parse_split(text: str) -> tuple[float, float, float]:
    """'1:2' or '1:2:0.05' -> shares of forward, backward, optimizer (summing to 1)."""
    try:
        parts = [float(x) for x in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 2:
        parts.append(0.0)
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or parts[1] <= 0:
        raise UsageError(f"--split takes forward:backward[:optimizer], like 1:2; got {text!r}")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def published_profile(
    throughputs: dict[str, float],
    batch_size: int,
    precision: str,
    device: str,
    split: str = "1:2",
    source: str = "",
) -> dict[str, Any]:
    """A profile from published single-GPU images/s: step = batch / images_per_s, shared
    among forward, backward and optimizer by `split` (default 1:2: backward does the two
    matrix products per layer that forward does once, one for the input's gradient and one
    for the weights'; the optimizer's few ms are then inside the published step)."""
    f, b, o = parse_split(split)
    models: dict[str, Any] = {}
    for model, ips in throughputs.items():
        if ips <= 0:
            raise UsageError(f"--published {model}={ips}: images/s must be > 0")
        step = batch_size / ips
        models[model] = {
            precision: {
                str(batch_size): {
                    "forward_s": f * step,
                    "backward_s": b * step,
                    "optimizer_s": o * step,
                }
            }
        }
    return {
        "device": device,
        "name": device,
        "derived": {
            "from": "published single-GPU throughput",
            "images_per_s": throughputs,
            "batch_size": batch_size,
            "precision": precision,
            "split": split,
            "source": source,
        },
        "image_sizes": {m: NATIVE_IMAGE_SIZE.get(m, 224) for m in throughputs},
        "models": models,
    }

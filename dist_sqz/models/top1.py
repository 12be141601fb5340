"""Published ImageNet top-1 accuracy of a model, with its source: an input, never a target.

torchvision's classifiers carry theirs in their weights' metadata, read offline
(`get_model_weights(name).DEFAULT.meta`): the accuracy of those very weights, trained by
torchvision's recipe. Models torchvision lacks take theirs from the paper that defined them
(`PAPERS`, each with its table); a model with neither is unknown, never guessed.
"""

from __future__ import annotations

from typing import Any

# model name -> (top-1 %, source). Only figures read from the paper named.
PAPERS: dict[str, tuple[float, str]] = {
    "timm:mobilenetv1_100": (
        70.6,
        "Howard et al. 2017, MobileNets, arXiv 1704.04861, Table 8 (1.0 MobileNet-224)",
    ),
    "timm:mixnet_s": (
        75.8,
        "Tan & Le 2019, MixConv, arXiv 1907.09595 (MixNet-S in its ImageNet comparison)",
    ),
}


def published_top1(name: str) -> dict[str, Any]:
    """{top1 (percent, or None), source} of a model named as docs/models.md says."""
    if name in PAPERS:
        top1, source = PAPERS[name]
        return {"top1": top1, "source": source}
    from dist_sqz.models.resolve import torchvision_names

    if name in torchvision_names():
        from torchvision.models import get_model_weights

        weights = get_model_weights(name).DEFAULT
        top1 = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
        if top1 is not None:
            return {"top1": float(top1), "source": f"torchvision {weights} metadata"}
    return {"top1": None, "source": "unknown"}

"""Training recipes that ship with the package: `recipe_data/<data>_<model>.yaml`.

A recipe is a train config (lr, schedule, augmentation, step budget, evaluation) with which a
model reaches a stated held-out accuracy on a dataset; `configs/<data>_<model>.yaml` in the
repository are links to the same files. A folder of one's own `<data>_<model>.yaml` files can
stand in for the shipped ones (`compare --recipes DIR`). `compare --target-accuracy` trains
every model with its recipe, so each reaches the target the way it was tuned to.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dist_sqz.errors import UsageError

_PACKAGE_DATA = "dist_sqz.training.recipe_data"


def available(folder: str = "") -> dict[str, str]:
    """`<data>_<model>` -> YAML text of every recipe in `folder` (default: the shipped ones)."""
    if folder:
        root = Path(folder)
        if not root.is_dir():
            raise UsageError(f"recipes folder {folder!r} not found")
        return {p.stem: p.read_text() for p in sorted(root.glob("*_*.yaml"))}
    pkg = resources.files(_PACKAGE_DATA)
    return {
        p.name[: -len(".yaml")]: p.read_text() for p in pkg.iterdir() if p.name.endswith(".yaml")
    }


def recipe(data: str, model: str, folder: str = "") -> dict[str, Any]:
    """The recipe of `model` on `data`, as train config keys; UsageError if there is none.
    Data read from a folder (`cifar10:PATH`) takes the recipe of its kind (`cifar10_<model>`)
    with `data` set to the folder given."""
    have = available(folder)
    where = f" in {folder}" if folder else ""
    kind, _, path = data.partition(":")
    data = kind
    name = f"{data}_{model}"
    if name not in have:
        datas = sorted({n.split("_", 1)[0] for n in have})
        if data not in datas:
            raise UsageError(
                f"no recipes for data {data!r}{where}; time to accuracy needs one of: "
                f"{', '.join(datas) or 'none'} (e.g. --data digits or --data cifar10:PATH)"
            )
        models = sorted(n.split("_", 1)[1] for n in have if n.startswith(data + "_"))
        like = "squeezenet1_1" if "squeezenet1_1" in models else models[0]
        raise UsageError(
            f"no {data} recipe for {model}{where} (there are: {', '.join(models)}); write "
            f"{name}.yaml into a folder (train keys: lr, steps, eval_every, ...; start from "
            f"configs/{data}_{like}.yaml) and pass --recipes FOLDER"
        )
    try:
        keys = yaml.safe_load(have[name])
    except yaml.YAMLError as e:
        raise UsageError(
            f"recipe {name}{where} is not valid YAML: {str(e).splitlines()[0]}"
        ) from None
    if not isinstance(keys, dict):
        raise UsageError(f"recipe {name}{where} must be a mapping of train config keys")
    if path:
        keys["data"] = f"{kind}:{path}"
    return keys


# What a run may change and still train by its recipe: where the data is, how long it runs
# and how often it is watched.
NOT_THE_RECIPE = {
    "data",
    "steps",
    "warmup_steps",
    "eval_every",
    "log_every",
    "checkpoint_every",
    "compute_probe_steps",
    "target_accuracy",
}


def uses_recipe(settings: dict[str, Any]) -> bool:
    """Whether a run trains by its data and model's shipped recipe (every setting of the
    recipe but its length and watching has the recipe's value), so that advice does not send
    it where it already is."""
    try:
        wanted = recipe(settings.get("data", ""), settings.get("model", ""))
    except UsageError:
        return False
    return all(settings.get(k) == v for k, v in wanted.items() if k not in NOT_THE_RECIPE)

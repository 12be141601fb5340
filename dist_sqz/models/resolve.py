"""A model named any way a user would name it, resolved to a builder taking `num_classes`.

The grammar (docs/models.md), tried in this order:

- `NAME` or `NAME:key=value,...`: a model of dist_sqz's registry (`dist-sqz models`), with a
  family's settings (`sqz_family:squeeze_ratio=0.25`);
- `timm:NAME`: timm's model of that name (timm is an optional extra), never pretrained;
- `MODULE:CALLABLE` (`my_pkg.nets:build`): the user's own builder, imported; it takes
  `num_classes` and returns an `nn.Module`;
- `NAME` of an entry point in the `dist_sqz.models` group: a package that ships models
  (`[project.entry-points."dist_sqz.models"] mynet = "my_pkg.nets:build"`);
- `NAME` of a torchvision classification model (`mobilenet_v3_small`, `shufflenet_v2_x0_5`,
  `regnet_x_400mf`, ...), built with `weights=None`: nothing is downloaded.

Every fault is a UsageError of one line: a module that does not import, a name that is not
callable, an unknown name (with the closest known ones), timm missing.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable
from typing import Any

from dist_sqz.errors import UsageError, first_line

ENTRY_POINTS = "dist_sqz.models"
TIMM_EXTRA = "pip install 'dist_sqz[timm]' (or pip install timm)"


def external_builder(name: str) -> Callable[..., Any] | None:
    """The builder of a model named outside the registry (`timm:`, an import path, an entry
    point, a torchvision name), or None where `name` is none of these."""
    base, colon, rest = name.partition(":")
    if base == "timm" and colon:
        return _timm(rest)
    if colon and "=" not in rest:
        return _imported(base, rest, name)
    if colon:  # settings: only the registry's families take them
        if external_builder(base) is not None:
            raise UsageError(f"model {base} takes no settings; got {rest!r}")
        return None
    found = _entry_points().get(name)
    if found is not None:
        try:
            return _callable(found.load(), name)
        except UsageError:
            raise
        except Exception as e:  # the package's own import failed: say which and why
            raise UsageError(
                f"model {name}: entry point {found.value} does not load: {first_line(e)}"
            ) from None
    if name in torchvision_names():
        return functools.partial(_torchvision, name)
    return None


def from_library(name: str) -> bool:
    """Whether `name` is timm's or torchvision's model (not the registry's, not the user's)."""
    from dist_sqz.models.registry import MODELS

    base, colon, _ = name.partition(":")
    if base == "timm" and colon:
        return True
    if colon or name in MODELS or name in _entry_points():
        return False
    return name in torchvision_names()


def unknown(name: str, known: list[str]) -> UsageError:
    """The error for a name nothing resolves, naming the closest known ones."""
    base = name.partition(":")[0]
    pool = list(dict.fromkeys(known + torchvision_names() + sorted(_entry_points())))
    close = difflib.get_close_matches(base, pool, n=4, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return UsageError(
        f"unknown model {name!r}{hint} (dist-sqz models lists dist_sqz's own: "
        f"{', '.join(known)}; also any torchvision classifier by name, timm:NAME, "
        "MODULE:CALLABLE, docs/models.md)"
    )


@functools.lru_cache(maxsize=1)
def torchvision_names() -> list[str]:
    """torchvision's classification models (its 80 in 0.29)."""
    from torchvision import models

    return list(models.list_models(module=models))


def _torchvision(name: str, num_classes: int = 1000) -> Any:
    from torchvision import models

    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name in ("inception_v3", "googlenet"):
        kwargs["aux_logits"] = False  # one output (their auxiliary heads train with a loss of
        kwargs["init_weights"] = False  # their own); scipy's truncated normal init is slow
    return models.get_model(name, **kwargs)


def _timm(name: str) -> Callable[..., Any]:
    try:
        import timm
    except ImportError:
        raise UsageError(f"model timm:{name} needs timm: {TIMM_EXTRA}") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        hint = f"; closest: {', '.join('timm:' + c for c in close)}" if close else ""
        raise UsageError(f"unknown timm model {name!r}{hint}")

    def build(num_classes: int = 1000) -> Any:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    return build


def _imported(module: str, attr: str, name: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # anything the user's module raises at import is their fault
        raise UsageError(
            f"model {name}: module {module} does not import: {first_line(e)}"
        ) from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"model {name}: {module} has no {attr!r}")
        obj = getattr(obj, part)
    return _callable(obj, name)


def _callable(obj: Any, name: str) -> Callable[..., Any]:
    if not callable(obj):
        raise UsageError(f"model {name}: {type(obj).__name__} is not callable")
    return obj


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}

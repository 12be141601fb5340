"""Component options: each component declares, next to its class, a dataclass of the settings
it reads, its fields named as the train config's keys (so every flag and YAML key stays what
it was), and is built from that alone (`pick`). The train config is where users set them;
no component module imports it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def settings_of(settings: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    """A {key: value} view of train settings given as a mapping or a config object."""
    return settings if isinstance(settings, Mapping) else vars(settings)


def pick(
    options: type[T], settings: Mapping[str, Any] | Any, keys: Mapping[str, str] | None = None
) -> T:
    """`options` (a dataclass) filled from the train settings it names, each field read from
    the key of its own name or, for a field in `keys`, from `keys[field]`; the rest keep
    their defaults."""
    values, keys = settings_of(settings), keys or {}
    names = {f.name: keys.get(f.name, f.name) for f in fields(options)}
    return options(**{f: values[k] for f, k in names.items() if k in values})

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


def pick(options: type[T], settings: Mapping[str, Any] | Any) -> T:
    """`options` (a dataclass) filled from the train settings it names; the rest keep their
    defaults."""
    values = settings_of(settings)
    return options(**{f.name: values[f.name] for f in fields(options) if f.name in values})

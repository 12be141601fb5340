"""A name -> factory registry, one per plug-in kind (models, backends, compressors)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from dist_sqz.errors import UsageError


class Registry:
    """Maps names to factories; `register("name")` is the decorator that fills it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = factory
            return factory

        return add

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            raise UsageError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@functools.lru_cache(maxsize=1)
def shipped_zoo() -> dict[str, dict[str, float]]:
    """The model registry's entries as shipped (`models/zoo_facts.json`: name -> params and
    GFLOPs at 224 px), read as a file: importing `dist_sqz.models` imports torch and
    torchvision (2 s of a 5 s `simulate`), which naming or counting a model does not need.
    tests/test_models.py holds the file to the registry."""
    import json
    from importlib import resources

    text = resources.files("dist_sqz").joinpath("models", "zoo_facts.json").read_text()
    return json.loads(text)["models"]

"""Facts of models not shipped with the package (a torchvision or timm classifier: its
parameters, GFLOPs at 224 px and buffer broadcasts), counted once and kept where a user's
caches go: `$DIST_SQZ_CACHE`, else `$XDG_CACHE_HOME/dist_sqz`, else `~/.cache/dist_sqz`
(file `model_facts.json`).

An entry is keyed by the model's name and the version of the library that defines it, read
from the installed package's metadata (no import): a new torchvision or timm counts again.
The user's own models (an import path, an entry point) and the registry's family settings
are counted every time: their code can change under the same version. Reading and writing
import neither torch nor torchvision, so a cached model starts as fast as a shipped one.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

CACHE_FILE = "model_facts.json"


def cache_dir() -> Path:
    if os.environ.get("DIST_SQZ_CACHE"):
        return Path(os.environ["DIST_SQZ_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "dist_sqz"


def _library(name: str) -> str | None:
    """'timm 1.0.x' for timm:NAME, 'torchvision 0.x' for a bare name; None otherwise."""
    base, colon, _ = name.partition(":")
    package = "timm" if (base == "timm" and colon) else None if colon else "torchvision"
    if package is None:
        return None
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return None


def _key(name: str) -> str | None:
    lib = _library(name)
    return None if lib is None else f"{name}|{lib}"


def _read() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):  # none yet, or unreadable: count again
        return {}
    return data if isinstance(data, dict) else {}


def cached_facts(name: str) -> dict[str, Any] | None:
    """What was counted for `name` under the installed library, or None."""
    key = _key(name)
    return None if key is None else _read().get(key)


def remember_facts(name: str, facts: dict[str, Any], from_library: bool) -> None:
    """Keep `facts` for `name` when a library defines it (`from_library`: it resolved to a
    torchvision or timm model, not the user's entry point of the same name). A cache that
    cannot be written is skipped: counting again next time is the only cost."""
    key = _key(name)
    if key is None or not from_library:
        return
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = _read() | {key: facts}
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(f.name, folder / CACHE_FILE)  # whole or not at all, if two write at once
    except OSError:
        return


def facts_for(names: list[str]) -> dict[str, dict[str, Any]]:
    """Each model's facts: shipped (the zoo), cached, or counted now on the meta device (and
    kept, for a library's model). An unknown name fails in one line."""
    from dist_sqz.registry import shipped_zoo

    out = {}
    for name in names:
        facts = shipped_zoo().get(name) or cached_facts(name)
        if facts is None:
            from dist_sqz.models.stats import counted_facts

            facts = counted_facts(name)
        out[name] = facts
    return out

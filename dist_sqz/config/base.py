"""The config machinery: a pydantic base whose errors are one line, YAML files, --set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dist_sqz.errors import UsageError

WandbMode = Literal["off", "offline", "online"]
C = TypeVar("C", bound="Config")


def check_model(name: str) -> str:
    """A registered model name as is; anything else (a family member's settings, a typo)
    through the registry, which says what is wrong. The zoo's names are read from its
    shipped counts: importing the registry imports torchvision (2 s of a 5 s `simulate`)."""
    from dist_sqz.registry import shipped_zoo

    if name in shipped_zoo():
        return name
    from dist_sqz.models import model_spec

    model_spec(name)  # UsageError listing the models, or naming a bad setting
    return name


def registry_choices(field: str) -> list[str] | None:
    """The registry that lists a field's choices (for --help and argparse), if any."""
    if field == "models":
        from dist_sqz.models import MODELS

        return MODELS.names()
    if field == "backend":
        from dist_sqz.comm.backends import BACKENDS

        return BACKENDS.names()
    if field == "compression":
        from dist_sqz.comm.compression import COMPRESSORS

        return COMPRESSORS.names()
    return None


class Config(BaseModel):
    """Base: unknown keys are errors, values keep their declared types."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    # Keys renamed so that one word means one thing in every command: {old: new}. The old
    # key is still read from YAML, --set and dicts, and the old flag still works.
    ALIASES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.ALIASES:
            return {cls.ALIASES.get(k, k): v for k, v in data.items()}
        return data

    @classmethod
    def build(cls: type[C], *layers: dict[str, Any]) -> C:
        """Merge layers (later wins) over the defaults; validate; UsageError on any fault."""
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer)
        try:
            return cls(**merged)
        except ValidationError as e:
            raise UsageError(one_line(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_EXAMPLES = {"workers": "1,2,4", "models": "alexnet,squeezenet1_1"}


def one_line(e: ValidationError, name: str | None = None) -> str:
    """A validation error as one line naming the setting (`name` where the error has no
    location of its own: a single value validated alone)."""
    err = e.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else name or "config"
    if len(err["loc"]) > 1:  # one item of a list: name the list, show the item
        return f"{name} takes values like {_EXAMPLES.get(name, '1,2')}; got {err.get('input')!r}"
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key {name!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    for bound, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if bound in ctx:
            return f"{name} must be {op} {ctx[bound]}, got {value!r}"
    if kind == "literal_error":
        return f"{name} must be one of {ctx.get('expected')}; got {value!r}"
    for t in ("int", "float", "bool", "string"):
        if kind.startswith(t):
            return f"{name} must be {'str' if t == 'string' else t}; got {value!r}"
    return f"{name}: {err['msg']}; got {value!r}"


def setting(default: Any, help: str, **kw: Any) -> Any:
    return Field(default, description=help, **kw)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a {key: value} dict (keys are checked by `build`)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"config file {str(p)!r} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {str(p)!r} must hold a mapping of key: value")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (`lr=1e-3`, `nesterov=true`)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key.strip().replace("-", "_")] = raw
    return out

"""A compressor with its settings, named as users type it: `topk`, `powersgd:rank=4`,
`dgc:density=0.001:warmup_steps=100`. The keys are the compressor's own option names; each
variant turns into the train settings (`compression`, `powersgd_rank`, ...) that run it, and
each value is checked by that train setting's own field (type and range), so a setting typed
here and the same one given by `--set` or YAML obey one rule."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import TypeAdapter, ValidationError

from dist_sqz.config.base import one_line
from dist_sqz.errors import UsageError

if TYPE_CHECKING:
    from dist_sqz.comm.compression import Compressor


def _compressors() -> Any:
    from dist_sqz.comm.compression import COMPRESSORS

    return COMPRESSORS


@dataclass(frozen=True)
class Variant:
    label: str  # as typed, normalised: name[:key=value...]
    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def train_settings(self) -> dict[str, Any]:
        """The train-config keys that run this variant."""
        cls = _compressors().get(self.name)
        return {"compression": self.name, **{cls.KEYS.get(k, k): v for k, v in self.options}}

    def build(self) -> Compressor:
        from dist_sqz.comm.compression import build_compressor

        return build_compressor(self.name, self.train_settings())


def checked(key: str, setting: str, value: Any) -> Any:
    """`value` of the option `key` validated (and converted) by the train config's field
    `setting`, which declares its type and range; UsageError naming `key` otherwise."""
    from dist_sqz.config.train import TrainConfig

    field = TrainConfig.model_fields[setting]
    kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    adapter = TypeAdapter(kind)
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        raise UsageError(one_line(e, key)) from None


def parse_variant(text: str) -> Variant:
    name, *pairs = [p.strip() for p in text.strip().split(":")]
    cls = _compressors().get(name)  # UsageError listing the compressors
    allowed = [f.name for f in fields(cls.Options)]
    options = []
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or key not in allowed:
            takes = ", ".join(f"{k}=..." for k in allowed) or "no settings"
            raise UsageError(f"compression {name} takes {takes}; got {pair!r} in {text!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        try:
            options.append((key, checked(key, cls.KEYS.get(key, key), value)))
        except UsageError as e:
            raise UsageError(f"compression {text!r}: {e}") from None
    label = ":".join([name, *(f"{k}={v}" for k, v in options)])
    variant = Variant(label, name, tuple(options))
    try:
        variant.build()
    except (TypeError, ValueError) as e:
        raise UsageError(f"compression {text!r}: {e}") from None
    return variant


def parse_variants(items: list[str]) -> list[Variant]:
    """Each item a variant; labels must differ (two settings of one compressor may not)."""
    out = [parse_variant(i) for i in items]
    labels = [v.label for v in out]
    if len(set(labels)) != len(labels):
        raise UsageError(
            f"compression lists {sorted({x for x in labels if labels.count(x) > 1})[0]} twice"
        )
    return out

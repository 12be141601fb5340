"""Typed configs, validated once at start-up by pydantic: defaults < YAML file < flags/--set.

Every field is a YAML key and a flag (`batch_size` <-> `--batch-size`; booleans as
`--flag/--no-flag`; optionals take `--set key=null`); `--set key=value` sets any key, its value
read as a YAML scalar. Any bad value raises one `UsageError` naming the field. `TrainConfig`
is one run; `CompareConfig` and `SimulateConfig` are the commands that launch or model many.
Choices of model, backend and compression come from their registries.
"""

from dist_sqz.config.base import Config, load_yaml, parse_set, registry_choices
from dist_sqz.config.commands import (
    CompareConfig,
    DesignSpaceConfig,
    FrontierConfig,
    SimulateConfig,
)
from dist_sqz.config.train import TrainConfig

__all__ = [
    "CompareConfig",
    "Config",
    "DesignSpaceConfig",
    "FrontierConfig",
    "SimulateConfig",
    "TrainConfig",
    "load_yaml",
    "parse_set",
    "registry_choices",
]

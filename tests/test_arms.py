"""`compare --arms`: the arms named, normalised, and the models and compressors they imply;
a comparison's saved config (which holds all three) reloads."""

from __future__ import annotations

import pytest
import yaml

import dist_sqz.models  # noqa: F401  (torch imported at collection, not inside a test)
from dist_sqz.config import CompareConfig
from dist_sqz.errors import UsageError


def test_arms_imply_models_and_compressors_and_reload():
    cfg = CompareConfig.build({"arms": "squeezenet1_1, alexnet+topk, alexnet+powersgd:rank=2"})
    assert cfg.arms == ["squeezenet1_1", "alexnet+topk", "alexnet+powersgd:rank=2"]
    assert cfg.models == ["squeezenet1_1", "alexnet"]
    assert cfg.compression == ["none", "topk", "powersgd:rank=2"]
    saved = yaml.safe_load(yaml.safe_dump(cfg.model_dump(exclude_unset=True)))
    assert CompareConfig.build(saved).arms == cfg.arms
    with pytest.raises(UsageError, match="drop --compression"):
        CompareConfig.build({"arms": "alexnet+topk", "compression": "none"})

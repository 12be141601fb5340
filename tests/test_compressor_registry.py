"""Every registered compressor, taken from the registry (a new one is covered with no edit
here): its `plan`, which the cost model prices, is what its accounted exchange sends, on a
one-rank gloo group in this process; and its options obey the train config's rules."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
import torch.distributed as dist

from dist_sqz.comm.accounting import Ledger, sent_bytes
from dist_sqz.comm.collectives import TorchCollectives
from dist_sqz.comm.compression import COMPRESSORS, Bucket, build_compressor
from dist_sqz.config import TrainConfig

SHAPES = [torch.Size([6, 5]), torch.Size([6]), torch.Size([4, 3, 2, 2]), torch.Size([700])]
NAMES = ["fc.weight", "fc.bias", "conv.weight", "big.bias"]


@pytest.fixture(scope="module")
def one_rank():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("name", COMPRESSORS.names())
def test_plan_is_what_the_exchange_accounts(one_rank, name):
    ledger = Ledger(1)
    comm = TorchCollectives(ledger, 1)
    comp = build_compressor(name, TrainConfig(compression=name))
    numel = sum(s.numel() for s in SHAPES)
    grad = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    out = comp.exchange(Bucket(grad.clone(), 0, SHAPES, NAMES), comm).wait()
    assert out.shape == grad.shape and torch.isfinite(out).all()
    step = ledger.take_step()
    plan = comp.plan(SHAPES)
    assert step.payload_bytes == sum(b for _, b in plan)
    assert step.sent_bytes == sum(sent_bytes(kind, b, 1) for kind, b in plan)
    assert step.collectives == len(plan)


@pytest.mark.parametrize("name", COMPRESSORS.names())
def test_every_option_is_a_train_setting_of_its_default(name):
    """Each option a compressor reads is a TrainConfig field (the flag, the YAML key and the
    one rule for its type and range) with the option's own default."""
    cls = COMPRESSORS.get(name)
    defaults = TrainConfig()
    for f in fields(cls.Options):
        key = cls.KEYS.get(f.name, f.name)
        assert key in TrainConfig.model_fields, f"{name}: option {f.name} has no setting {key}"
        assert getattr(defaults, key) == f.default, (name, f.name)

"""The meter in a training script of one's own (docs/meter.md): examples/meter_train.py
under torchrun (DDP, with and without the user's PowerSGD hook) and horovodrun, whose bytes
are what `dist-sqz train` counts for the same model (tests/test_model_names.py: 2 ranks of
mobilenet_v3_small under torchrun, 4 x 2,542,856 + 48,720 B a step); the run folder read by
`dist-sqz report` and `compare --collect`; and each bad use refused in one line, leaving the
user's model as it was."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import torch.distributed as dist

from dist_sqz.errors import UsageError
from dist_sqz.meter import Meter
from tests.helpers import ROOT, base_env, dist_sqz, free_port, need_launcher, read_run, run

EXAMPLE = str(ROOT / "examples" / "meter_train.py")
SMALL = ["--steps", "4", "--image-size", "32", "--batch-size", "4"]
PARAMS, BUFFERS = 2_542_856, 48_720  # mobilenet_v3_small; its buffers: 2 broadcasts


def _example(tmp_path, name: str, *args: str, horovod: bool = False):
    out = tmp_path / name
    if horovod:
        need_launcher("horovod.torch", "horovodrun")
        env = base_env()
        env.pop("OMP_NUM_THREADS")
        cmd = ["horovodrun", "-np", "2", "--gloo", sys.executable, EXAMPLE, "--horovod"]
    else:
        env = base_env()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        cmd += ["--master-port", str(free_port()), EXAMPLE]
    proc = run([*cmd, "--out", str(out), *SMALL, *args], env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _powersgd_bytes(rank: int = 2, min_rate: int = 2) -> int:
    """What torch's PowerSGD hook all-reduces for mobilenet_v3_small (one bucket): each
    gradient as an n x m matrix, P (n x r) and Q (m x r) where (n + m) r x min_rate < n m,
    else the matrix itself (powerSGD_hook.py's `_should_compress`)."""
    import torchvision

    total = 0
    for p in torchvision.models.mobilenet_v3_small().parameters():
        n = p.shape[0]
        m = p.numel() // n
        r = min(n, m, rank)
        total += (n + m) * r if (n + m) * r * min_rate < n * m else n * m
    return 4 * total


@pytest.mark.integration
def test_the_example_under_torchrun_counts_what_train_counts(tmp_path):
    """Gradients and DDP's own buffer broadcasts, every step, exactly; every rank's
    parameters equal; `dist-sqz report` and `compare --collect` read the folder."""
    out = _example(tmp_path, "ddp")
    metrics, summary = read_run(out)
    exact = 4 * PARAMS + BUFFERS
    assert [(m["payload_bytes"], m["sent_bytes"]) for m in metrics] == [(exact, exact)] * 4
    assert [m["collectives"] for m in metrics] == [3, 4, 4, 4]  # as train: buckets re-formed
    assert all(m["comm_time_s"] > 0 and m["step_time_s"] > 0 for m in metrics)
    assert summary["replicas_consistent"] is True and summary["launcher"] == "torchrun"
    assert summary["batch_size"] == 4 and summary["params"] == PARAMS
    assert summary["comm_hook"] == "allreduce" and summary["broadcast_buffers"] is True
    lines = (out / "collectives.jsonl").read_text().splitlines()
    assert [len(json.loads(x)["c"]) for x in lines] == [3, 4, 4, 4]

    proc = dist_sqz("report", str(out), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mobilenet_v3_small" in (tmp_path / "report" / "report.md").read_text()
    proc = dist_sqz("compare", "--collect", str(out), "--out", str(tmp_path / "collected"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads((tmp_path / "collected" / "results.json").read_text())["rows"]
    assert (row["model"], row["world_size"]) == ("mobilenet_v3_small", 2)
    assert row["payload_bytes"] == exact


@pytest.mark.integration
def test_the_users_powersgd_hook_still_compresses_and_its_bytes_are_counted(tmp_path):
    """torch's own powerSGD_hook, registered by the script before the meter: plain
    all-reduce for its first 2 iterations, then P and Q and the matrices not worth
    compressing, as its rule decides: counted to the byte."""
    metrics, summary = read_run(_example(tmp_path, "psgd", "--powersgd"))
    full, compressed = 4 * PARAMS + BUFFERS, _powersgd_bytes() + BUFFERS
    assert [m["payload_bytes"] for m in metrics] == [full, full, compressed, compressed]
    assert compressed < full / 30
    assert summary["comm_hook"] == "powerSGD_hook" and summary["replicas_consistent"] is True


@pytest.mark.integration
def test_the_example_under_horovodrun_counts_what_train_counts(tmp_path):
    """Horovod's DistributedOptimizer: every gradient all-reduced (no buffers: Horovod sends
    none after broadcast_parameters; train --backend horovod --no-broadcast-buffers counts
    the same, tests/test_backends.py)."""
    metrics, summary = read_run(_example(tmp_path, "hvd", horovod=True))
    assert {(m["payload_bytes"], m["sent_bytes"]) for m in metrics} == {(4 * PARAMS,) * 2}
    assert summary["launcher"] == "horovodrun" and summary["replicas_consistent"] is True
    assert summary["batch_size"] == 4 and summary["backend"] == "horovod"


@pytest.fixture
def one_rank():
    """A process group of one gloo rank in this process (no process started)."""
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _bn_net() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_one_rank_records_every_step_and_leaves_the_model_as_found(tmp_path, one_rank):
    net = _bn_net()
    net(torch.zeros(1, 3, 8, 8))  # the lazy layer takes its shape
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    with Meter(tmp_path / "run", model="mine", warmup_steps=0) as meter:
        meter.watch(ddp)
        for _ in range(3):
            ddp(torch.randn(5, 3, 8, 8)).sum().backward()
            record = meter.step(loss=torch.tensor(1.5), lr=0.1)
    # DDP hands its buffers to a broadcast even alone (BatchNorm's 4 x 2 statistics, 1 count)
    buffers = 4 * 2 * 4 + 8
    assert record["payload_bytes"] == 4 * sum(p.numel() for p in net.parameters()) + buffers
    assert record["sent_bytes"] == 0 and record["loss"] == 1.5 and record["batch_size"] == 5
    metrics, summary = read_run(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3] and summary["steps_measured"] == 3
    assert summary["model"] == "mine" and summary["replicas_consistent"] is True
    assert not ddp._forward_pre_hooks and "_distributed_broadcast_coalesced" not in vars(ddp)
    assert dist.all_reduce is dist.distributed_c10d.all_reduce  # the wrappers are gone


def test_bad_uses_are_one_line_and_touch_nothing(tmp_path, one_rank):
    net = _bn_net()
    net(torch.zeros(1, 3, 8, 8))
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    cases = [
        (lambda: Meter(tmp_path / "a").watch(net), "not wrapped"),
        (lambda: Meter(tmp_path / "b").watch(object()), "not object"),
        (lambda: Meter(tmp_path / "c").step(), "before meter.watch"),
        (lambda: Meter(tmp_path / "d", warmup_steps=-1), "warmup_steps must be >= 0"),
    ]
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases.append((lambda: Meter(blocker / "run").watch(ddp), "not writable"))
    used = tmp_path / "used"
    used.mkdir()
    (used / "metrics.jsonl").write_text("")
    cases.append((lambda: Meter(used).watch(ddp), "already holds a run"))
    for make, words in cases:
        with pytest.raises(UsageError) as e:
            make()
        assert words in str(e.value) and "\n" not in str(e.value)
    first = Meter(tmp_path / "one")
    first.watch(ddp)
    with pytest.raises(UsageError, match="already has a meter"):
        Meter(tmp_path / "two").watch(ddp)
    first.close()
    other = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    other._register_builtin_comm_hook(dist.BuiltinCommHookType.FP16_COMPRESS)
    with pytest.raises(UsageError, match="built-in comm hook"):
        Meter(tmp_path / "three").watch(other)
    assert not other._forward_pre_hooks and not ddp._forward_pre_hooks
    assert not any(p.exists() for p in (tmp_path / "one", tmp_path / "two", tmp_path / "three"))
    assert os.listdir(used) == ["metrics.jsonl"]

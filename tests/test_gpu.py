"""The GPU path: nccl, mixed precision, channels_last, compile, CUDA-event timing and the
profiler. Skips cleanly without a CUDA GPU (CI has none). nccl runs one rank per GPU: with
one GPU the exchange is world size 1 (NCCL refuses two ranks on one device); with two or
more, a 2-rank test runs too."""

import json
import sys

import pytest
import torch

from tests.helpers import read_run, run, train_torchrun

pytestmark = [
    pytest.mark.integration,  # every test here starts processes
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ARGS = ("--backend", "nccl", "--model", "squeezenet1_1", "--image-size", "64")
ARGS += ("--batch-size", "8", "--steps", "6", "--warmup-steps", "2")


def test_nccl_exact_payload_and_event_timed_comm(tmp_path):
    out = tmp_path / "run"
    train_torchrun(1, out, *ARGS)
    metrics, summary = read_run(out)
    assert {m["payload_bytes"] for m in metrics} == {4_941_984}
    for m in metrics:  # CUDA-event timed, and inside the wall-clock step
        assert 0 < m["comm_time_s"] <= m["step_time_s"], m
    assert summary["device"].startswith("cuda")
    assert summary["replicas_consistent"] is True


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_channels_last_compile_on_gpu(tmp_path, precision):
    out = tmp_path / precision
    train_torchrun(
        1, out, *ARGS, "--precision", precision, "--channels-last", "--compile", timeout=900
    )
    metrics, summary = read_run(out)
    assert {m["payload_bytes"] for m in metrics} == {4_941_984}  # fp32 gradients
    assert all(0 < m["loss"] < 10 for m in metrics)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs for 2 nccl ranks")
def test_nccl_two_ranks(tmp_path):
    out = tmp_path / "two"
    train_torchrun(2, out, *ARGS, "--precision", "bf16", "--channels-last")
    metrics, summary = read_run(out)
    assert {m["sent_bytes"] for m in metrics} == {4_941_984}  # ring: 2(N-1)/N x payload
    assert summary["replicas_consistent"] is True


def test_profile_on_gpu(tmp_path):
    out = tmp_path / "p.json"
    proc = run(
        [sys.executable, "-m", "dist_sqz", "profile", "--models", "squeezenet1_1"]
        + ["--batch-sizes", "16", "--image-size", "64", "--steps", "5", "--compile"]
        + ["--out", str(out)],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    prof = json.loads(out.read_text())["models"]["squeezenet1_1"]
    assert set(prof) == {"fp32", "bf16_cl", "fp32+compile", "bf16_cl+compile"}
    for times in prof.values():
        t = times["16"]
        assert 0 < t["forward_s"] < t["step_s"]

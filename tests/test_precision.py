"""Mixed precision, channels_last and torch.compile on CPU (2 gloo workers): they train, the
replicas agree, and the gradient exchange is unchanged (gradients stay fp32, the comm hook
fires under compile)."""

import pytest
from torchvision.models import squeezenet1_1

from dist_sqz.models import count_params
from tests.helpers import TINY, read_run, train_torchrun

pytestmark = pytest.mark.integration  # every test here starts processes

# Every gradient is exchanged as fp32: 4 bytes per parameter, as in an fp32 run.
FP32_PAYLOAD = 4 * count_params(squeezenet1_1(num_classes=1000))


def _same_exchange(metrics):
    for m in metrics:
        assert m["payload_bytes"] == m["sent_bytes"] == FP32_PAYLOAD, m
    # As in fp32: DDP's first step sends one bucket in parameter order, then it re-forms
    # them in the order gradients arrived (two of at most 25 MiB).
    assert [m["collectives"] for m in metrics] == [1] + [2] * (len(metrics) - 1)


def test_bf16_autocast_and_channels_last(tmp_path):
    out = tmp_path / "bf16"
    train_torchrun(2, out, *TINY, "--precision", "bf16", "--channels-last")
    metrics, summary = read_run(out)
    _same_exchange(metrics)
    assert summary["replicas_consistent"] is True
    assert all(0 < m["loss"] < 10 for m in metrics)


def test_fp16_scaler_skips_overflow_and_resumes_exactly(tmp_path):
    # The first step's loss scale (65536) overflows; the scaler must skip it on both ranks
    # (fused SGD would fill its momentum with inf and every later loss would be NaN), and a
    # resumed run must restore the halved scale, or its first step differs.
    args = (*TINY, "--precision", "fp16", "--steps", "6")
    full = tmp_path / "full"
    train_torchrun(2, full, *args)
    metrics, summary = read_run(full)
    _same_exchange(metrics)
    assert all(0 < m["loss"] < 10 for m in metrics), [m["loss"] for m in metrics]
    assert summary["replicas_consistent"] is True

    cut = tmp_path / "cut"
    train_torchrun(2, cut, *args[:-1], "3")
    train_torchrun(2, cut, "--resume", str(cut), "--steps", "6")
    assert read_run(cut)[1]["param_checksum"] == summary["param_checksum"]


def test_compile_keeps_the_comm_hook(tmp_path):
    out = tmp_path / "compiled"
    train_torchrun(2, out, *TINY, "--compile", timeout=600)
    metrics, summary = read_run(out)
    _same_exchange(metrics)  # the hook counted every byte, in the same buckets
    assert summary["replicas_consistent"] is True

"""nccl on a GPU (skips cleanly without one; CI has none)."""

import pytest
import torch

from tests.helpers import read_run, train_torchrun

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_nccl_exact_payload_and_event_timed_comm(tmp_path):
    out = tmp_path / "run"
    train_torchrun(
        1,
        out,
        "--backend",
        "nccl",
        "--model",
        "squeezenet1_1",
        "--image-size",
        "64",
        "--batch-size",
        "8",
        "--steps",
        "6",
        "--warmup-steps",
        "2",
    )
    metrics, summary = read_run(out)
    assert {m["payload_bytes"] for m in metrics} == {4_941_984}
    assert all(m["comm_time_s"] > 0 for m in metrics)  # CUDA-event timed
    assert summary["device"].startswith("cuda")
    assert summary["replicas_consistent"] is True

"""The same training under torchrun (gloo DDP), mpirun (mpi4py) and horovodrun (Horovod):
same payload bytes every step, same parameters. These skip only where mpi4py/Open MPI or
Horovod are missing, and fail instead when DIST_SQZ_REQUIRE_LAUNCHERS=1 (as .ci/run sets);
`launch/install_horovod.sh` installs both."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import (
    TINY,
    base_env,
    compressors,
    free_port,
    horovodrun,
    mpirun,
    need_launcher,
    read_run,
    refused,
    train_torchrun,
)
from tests.test_timeline import check_trace

pytestmark = pytest.mark.integration  # every test here starts processes


def _params(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]


def _max_rel_diff(a, b) -> float:
    return max(float((a[k] - b[k]).norm() / (b[k].norm() + 1e-12)) for k in b)


ARGS = [*TINY, "--steps", "3"]

# One job per launcher, read by the tests below: clipped, traced, long enough for medians.
STEPS = [*TINY, "--image-size", "64", "--steps", "8", "--warmup-steps", "2"]
CLIPPED = [*STEPS, "--grad-clip-norm", "0.05", "--trace-steps", "2-3"]


@pytest.fixture(scope="module")
def launchers(tmp_path_factory) -> dict:
    """The same clipped run under torchrun (DDP), mpirun (MPI) and horovodrun (Horovod), and
    DDP's unclipped twin: each folder, by name."""
    root = tmp_path_factory.mktemp("launchers")
    train_torchrun(2, root / "ddp", *CLIPPED)
    mpirun(2, root / "mpi", *CLIPPED)
    horovodrun(2, root / "hvd", *CLIPPED)
    train_torchrun(2, root / "unclipped", *STEPS)
    return {name: root / name for name in ("ddp", "mpi", "hvd", "unclipped")}


@pytest.mark.alone  # the launchers' runs are made here (comm_busy_s compared below)
def test_three_launchers_agree(launchers):
    """Also with gradient clipping (after averaging: on DDP once backward returns, in the
    bucketed exchange's step on MPI, around Horovod's synchronize); every launcher records
    the same norm before clipping."""
    runs = {k: read_run(launchers[k]) for k in ("ddp", "mpi", "hvd")}
    ref = [m["payload_bytes"] for m in runs["ddp"][0]]
    assert ref == [4 * 1_235_496] * 8
    for name, (metrics, summary) in runs.items():
        assert [m["payload_bytes"] for m in metrics] == ref, name
        assert [m["sent_bytes"] for m in metrics] == ref, name  # N=2: 2(N-1)/N = 1
        assert summary["replicas_consistent"], name
        assert summary["exposed_comm_s"] is not None, name
        assert all(m["comm_time_s"] > 0 for m in metrics), name
        # stragglers and overlap on every backend; a trace of steps 2-3 on one clock
        for key in ("step_time_max_s", "straggler_wait_s", "comm_overlap_frac"):
            assert summary[key] is not None and f"{key}_p95" in summary, (name, key)
        check_trace(launchers[name], range(2, 4))
    assert runs["mpi"][1]["launcher"] == "openmpi" and runs["hvd"][1]["launcher"] == "horovodrun"
    norms = {k: [m["grad_norm"] for m in metrics] for k, (metrics, _) in runs.items()}
    assert all(n > 0.05 for n in norms["ddp"])  # so the clip scaled every step
    for name in ("mpi", "hvd"):
        assert norms[name] == pytest.approx(norms["ddp"], rel=1e-3), name
    # unclipped runs record the norm too (it is how a non-finite gradient is caught): at
    # step 1, before any update, the same norm as the clipped run's
    unclipped = [m["grad_norm"] for m in read_run(launchers["unclipped"])[0]]
    assert unclipped[0] == pytest.approx(norms["ddp"][0], rel=1e-5)
    ddp = _params(launchers["ddp"])
    assert _max_rel_diff(_params(launchers["mpi"]), ddp) <= 1e-4
    assert _max_rel_diff(_params(launchers["hvd"]), ddp) <= 1e-4
    assert _max_rel_diff(_params(launchers["unclipped"]), ddp) > 1e-3  # the clip took effect


# mobilenet_v3_small: BatchNorm buffers (48,720 B a step, in two broadcasts: float32, int64)
BN = [*TINY, "--model", "mobilenet_v3_small", "--image-size", "32", "--steps", "3"]
BN_BYTES, GRAD_BYTES = 4 * 2_542_856 + 48_720, 4 * 2_542_856


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_buffers_are_broadcast_and_counted_on_mpi_and_horovod(tmp_path, launcher):
    """Rank 0's buffers before each forward, as on DDP (tests/test_model_names.py: the same
    bytes under torchrun): gradients and buffers counted, and every rank ends with rank 0's
    buffers (`replicas_consistent` holds them too); without, the gradients alone."""
    start = mpirun if launcher == "mpirun" else horovodrun
    start(2, tmp_path / "on", *BN)
    metrics, summary = read_run(tmp_path / "on")
    assert {(m["payload_bytes"], m["sent_bytes"]) for m in metrics} == {(BN_BYTES, BN_BYTES)}
    assert summary["broadcast_buffers"] is True and summary["replicas_consistent"] is True
    if launcher == "mpirun":
        assert [m["collectives"] for m in metrics] == [4, 4, 4]  # 2 buckets, 2 broadcasts
        start(2, tmp_path / "off", *BN, "--no-broadcast-buffers")
        metrics, summary = read_run(tmp_path / "off")
        assert {m["payload_bytes"] for m in metrics} == {GRAD_BYTES}
        assert [m["collectives"] for m in metrics] == [2, 2, 2]
        assert summary["broadcast_buffers"] is False


def test_gloo_ddp_under_mpirun(tmp_path):
    mpirun(2, tmp_path / "g", *ARGS, backend="gloo")
    metrics, summary = read_run(tmp_path / "g")
    assert summary["launcher"] == "openmpi" and summary["world_size"] == 2
    assert summary["replicas_consistent"]
    assert metrics[-1]["payload_bytes"] == 4 * 1_235_496


@pytest.mark.parametrize("compression", compressors())
def test_compression_on_mpi_and_horovod(tmp_path, compression):
    """Every registered compressor under mpirun and horovodrun: the same bytes, replicas
    consistent, the same weights; one that Horovod cannot carry is refused in one line."""
    args = [*ARGS, "--compression", compression, "--compression-density", "0.01"]
    mpirun(2, tmp_path / "mpi", *args)
    _, mpi = read_run(tmp_path / "mpi")
    assert mpi["replicas_consistent"] and mpi["compression_ratio"] > 1.5
    proc = horovodrun(2, tmp_path / "hvd", *args, expect=None)
    if "cannot all-reduce" in proc.stderr + proc.stdout:  # bf16: Horovod 0.28.1 has no op
        out = proc.stdout + proc.stderr
        ranks = [line for line in out.splitlines() if line.startswith("[")]  # horovodrun's own
        assert proc.returncode != 0 and "exit with status code 2" in out  # traceback aside
        assert not any("Traceback" in line for line in ranks), out[-3000:]
        assert not (tmp_path / "hvd" / "summary.json").exists()
        return
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    _, hvd = read_run(tmp_path / "hvd")
    assert hvd["replicas_consistent"]
    # Both bucket the same way, so even top-k's per-bucket k agrees.
    assert mpi["payload_bytes"] == hvd["payload_bytes"]
    if compression == "fp16":
        assert mpi["payload_bytes"] == 2 * 1_235_496  # Horovod's own fp16 compression
    if compression == "topk":
        assert mpi["compression_ratio"] > 40
    assert _max_rel_diff(_params(tmp_path / "mpi"), _params(tmp_path / "hvd")) <= 1e-3


def test_backend_without_its_launcher_is_a_usage_error(tmp_path, tiny):
    """Rank 0 of a 2-worker torchrun-style job asking for --backend mpi: MPI sees 1 process."""
    need_launcher("mpi4py", "mpirun")
    env = base_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_PORT=str(free_port()))
    line = refused("train", "--backend", "mpi", "--out", str(tmp_path / "x"), *tiny, env=env)
    assert "launch with mpirun" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.alone  # busy times of runs made apart, compared
def test_comm_time_means_the_same_on_every_backend(launchers):
    """comm_time_s sums issue-to-completion over a step's collectives and comm_busy_s is the
    time at least one was in flight, on DDP, MPI and Horovod alike. Same run on each (2
    workers, SqueezeNet 1.1 at 64 px): the union never exceeds the sum nor the step. MPI
    issues the same DDP-style buckets at the same points of backward as DDP, and its median
    comm_busy_s is within 4x of DDP's (before, MPI's completions were seen only when
    backward next polled). Horovod's own DistributedOptimizer issues every gradient the
    moment it is ready, so its collectives are in flight while the rest of backward runs on
    both ranks: the same definition gives it a longer busy time, bounded by the step."""
    busy = {}
    for name in ("ddp", "mpi", "hvd", "unclipped"):
        metrics, summary = read_run(launchers[name])
        for m in metrics:
            assert 0 < m["comm_busy_s"] <= m["comm_time_s"] + 1e-9, (name, m)
            assert m["comm_busy_s"] <= m["step_time_s"], (name, m)
        busy[name] = summary["comm_busy_s"]
    assert busy["ddp"] / 4 <= busy["mpi"] <= 4 * busy["ddp"], busy
    assert busy["hvd"] > 0, busy

"""W&B offline: a 2-worker run leaves exactly one offline run, read back from its .wandb file;
a resumed run goes on in the same W&B run."""

from __future__ import annotations

import pytest

from tests.helpers import base_env, read_run, run, torchrun_cmd, train_torchrun

pytest.importorskip("wandb")

from dist_sqz.observe.wandb_sink import read_offline_run  # noqa: E402

pytestmark = pytest.mark.integration  # every test here starts processes

SECRET = "dsqz-not-a-real-key-0123456789abcdef0123"


def test_offline_run_holds_every_step(tmp_path, tiny):
    out = tmp_path / "run"
    env = base_env(WANDB_API_KEY=SECRET)
    env.pop("WANDB_MODE", None)
    proc = run(
        torchrun_cmd(2, "--out", str(out), *tiny, "--wandb", "offline", "--wandb-group", "g1"),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics, summary = read_run(out)
    files = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    logged = read_offline_run(files[0])
    by_step = {h["_step"]: h for h in logged["history"] if "payload_bytes" in h}
    assert sorted(by_step) == [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        h = by_step[m["step"]]
        assert h["payload_bytes"] == m["payload_bytes"] == 4 * 1_235_496
        assert h["sent_bytes"] == m["sent_bytes"]
        assert h["step_time_s"] == pytest.approx(m["step_time_s"])
    assert logged["config"]["model"] == "squeezenet1_1"
    assert logged["config"]["wandb_group"] == "g1"
    assert logged["summary"]["summary/replicas_consistent"] is True
    assert logged["summary"]["summary/stalled"] is False  # the health watch's verdict
    assert logged["summary"]["summary/param_checksum"] == summary["param_checksum"]
    # The key never lands in the run directory, nor on the console.
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in proc.stdout + proc.stderr


def test_a_resumed_run_continues_its_wandb_run(tmp_path, tiny):
    """--resume logs into the W&B run it started (its id kept in RUN/wandb_run_id): offline,
    a second run directory of the same id, holding the steps after the checkpoint."""
    out = tmp_path / "run"
    args = [*tiny, "--wandb", "offline", "--checkpoint-every", "2"]
    train_torchrun(1, out, *args)
    first_id = (out / "wandb_run_id").read_text().strip()
    train_torchrun(1, out, "--resume", str(out), "--steps", "6", "--wandb", "offline")
    assert (out / "wandb_run_id").read_text().strip() == first_id
    files = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2, files
    runs = [read_offline_run(f) for f in files]
    assert [r["run_id"] for r in runs] == [first_id, first_id]
    steps = [sorted(h["_step"] for h in r["history"] if "payload_bytes" in h) for r in runs]
    assert steps == [[1, 2, 3, 4], [5, 6]]

"""`dist-sqz compare` as a long job: rows recorded as they finish, a failed row recorded while
the others go on, `--resume` finishing it; time to accuracy with recipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import dist_sqz.models  # noqa: F401 (torch and torchvision load at collection, not in a test)
from dist_sqz.compare.plan import collective_timeout_s, first_broadcast_s, shaped_link
from dist_sqz.observe.wandb_sink import read_offline_run
from tests.helpers import base_env, dist_sqz, refused_here


def _worker_pids(config_file: Path) -> list[int]:
    """Training workers (not their torchrun agent) started with `config_file`."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if str(config_file) in text and "torch.distributed.run" not in text:
            pids.append(int(d.name))
    return pids


@pytest.mark.integration
def test_failed_row_is_recorded_others_go_on_and_resume_finishes_it(tmp_path):
    """With a torchvision model, named as torchvision names it."""
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "dist_sqz", "compare", "--models", "mobilenet_v3_small"]
    cmd += ["--workers", "1,2", "--steps", "30", "--dilation", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill the 1-worker run's worker once it has trained a few steps: its row fails.
    metrics = out / "runs" / "mobilenet_v3_small-n1" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    pids = _worker_pids(out / "configs" / "mobilenet_v3_small-n1.yaml")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stdout[-3000:] + stderr[-3000:]
    assert b"1 row(s) failed: mobilenet_v3_small x 1" in stderr and b"--resume" in stderr
    result = json.loads((out / "results.json").read_text())
    rows = {r["world_size"]: r for r in result["rows"]}
    assert rows[1]["error"] and "error" not in rows[2]
    # gradients and buffers (broadcast before each forward, DDP's default), on emulated hosts
    assert rows[2]["sent_bytes"] == rows[2]["payload_bytes"] == 4 * 2_542_856 + 48_720
    assert rows[1]["error"].startswith("a worker died:") and "SIGKILL" in rows[1]["error"]
    assert result["failed"] == [f"mobilenet_v3_small x 1: {rows[1]['error']}"]
    assert "Rows that failed" in (out / "report.md").read_text()
    finished = (out / "runs" / "mobilenet_v3_small-n2" / "summary.json").stat().st_mtime_ns

    resumed = dist_sqz("compare", "--resume", str(out), timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "1 of 2 rows done" in resumed.stdout
    # The finished row was kept, not rerun; the failed one ran again (no checkpoint to
    # continue from), in a clean run directory.
    assert (out / "runs" / "mobilenet_v3_small-n2" / "summary.json").stat().st_mtime_ns == finished
    steps = [
        json.loads(x)["step"]
        for x in (out / "runs" / "mobilenet_v3_small-n1" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 31))
    result = json.loads((out / "results.json").read_text())
    assert result["failed"] == [] and len(result["rows"]) == 2
    assert all(r["scaling_efficiency"] is not None for r in result["rows"])


@pytest.mark.integration
def test_time_to_accuracy_with_recipes(tmp_path):
    """Recipes from a folder (a short schedule, and a target below any classifier's worst
    held-out accuracy on digits, 27/297 for one constant class, so the first evaluation
    reaches it and the runs stop there): each row gains the time-to-accuracy fields and its
    accuracy curve, the report its table and plot; emulated compute is the default, so the
    rows say which D they ran under. That the recipes reach real targets is
    benchmarks/recipes.py's job."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    tiny = {
        "model": "squeezenet1_1",
        "data": "digits",
        "num_classes": 1000,
        "image_size": 32,
        "batch_size": 16,
        "steps": 60,
        "warmup_steps": 2,
        "lr": 0.005,
        "lr_schedule": "cosine",
        "lr_warmup_steps": 6,
        "nesterov": True,
        "label_smoothing": 0.1,
        "eval_every": 10,
        "compute_probe_steps": 0,
        "log_every": 20,
    }
    (recipes / "digits_squeezenet1_1.yaml").write_text(yaml.safe_dump(tiny))
    out = tmp_path / "cmp"
    proc = dist_sqz(
        "compare",
        "--models",
        "squeezenet1_1",
        "--workers",
        "1,2",
        "--data",
        "digits",
        "--target-accuracy",
        "0.05",
        "--recipes",
        str(recipes),
        "--out",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["compute"]["kind"] == "local" and result["target_accuracy"] == 0.05
    profile = json.loads((out / "profile.json").read_text())
    assert set(profile["models"]["squeezenet1_1"]["fp32"]) == {"16"}
    for row in result["rows"]:
        assert row["dilation"] >= 1.5
        [(step, time_s, accuracy)] = row["accuracy_curve"]  # stopped at the first evaluation
        assert step == row["steps_to_accuracy"] == 10 and accuracy >= 0.05
        assert row["images_to_accuracy"] == 10 * row["world_size"] * 16
        assert row["time_to_accuracy_s"] == time_s > 0
        assert row["h100_projected_time_to_accuracy_s"] > 0
    metrics = (out / "runs" / "squeezenet1_1-n2" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 10
    report = (out / "report.md").read_text()
    assert "## Time to accuracy 0.05" in report and "H100 projection" in report
    assert (out / "accuracy_vs_time.png").stat().st_size > 0


def test_claim_lines_at_equal_accuracy():
    """The claim per N, from rows as compare writes them: who reaches the target sooner, by
    how much, with how many fewer bytes; a model that missed it is named."""
    from dist_sqz.compare.report import claim_lines

    def row(model, n, payload, t, images_per_s=100.0):
        return {
            "model": model,
            "world_size": n,
            "payload_bytes": payload,
            "sent_bytes": payload if n > 1 else 0,
            "images_per_s": images_per_s,
            "scaling_efficiency": 1.0,
            "time_to_accuracy_s": t,
            "h100_projected_time_to_accuracy_s": t / 100 if t else None,
        }

    rows = [
        row("alexnet", 1, 244_403_360, 300.0),
        row("alexnet", 2, 244_403_360, 400.0),
        {**row("alexnet", 4, 244_403_360, None), "accuracy": 0.912},
        row("squeezenet1_1", 1, 4_941_984, 150.0),
        row("squeezenet1_1", 2, 4_941_984, 100.0),
        row("squeezenet1_1", 4, 4_941_984, 60.0),
        {"model": "squeezenet1_0", "world_size": 2, "error": "a worker died"},
    ]
    lines = claim_lines(rows, {"target_accuracy": 0.95, "link": "1gbit"})
    text = "\n".join(lines)
    assert (
        "squeezenet1_1 reaches 0.95 on 2 hosts at 1gbit 4.0x sooner than alexnet "
        "(100 s vs 400 s), with 49.5x fewer bytes per step" in text
    )
    assert "on 1 host:** squeezenet1_1 reaches 0.95 on 1 host at 1gbit 2.0x sooner" in text
    assert "(one host: no bytes sent)" in text
    assert "**0.95 on 4 hosts:** alexnet (0.912 at its end) did not reach it." in text
    assert "*Projection, not measured:*" in text and "1.0 s vs 4.0 s" in text
    assert "squeezenet1_0" not in text  # its only row failed


def test_levers_at_each_n_and_the_claim_stays_uncompressed():
    """Compressed arms are ranked beside the models at each N, bytes beside each; the
    paper's claim compares the uncompressed models only."""
    from dist_sqz.compare.arms import arm_name, row_arm, split_arm
    from dist_sqz.compare.report import claim_lines, lever_lines

    assert arm_name("alexnet", "none") == "alexnet"
    assert split_arm(arm_name("alexnet", "powersgd:rank=2")) == ("alexnet", "powersgd:rank=2")

    def row(model, comp, n, sent, t):
        return {
            "model": model,
            "compression": comp,
            "arm": arm_name(model, comp),
            "world_size": n,
            "payload_bytes": sent,
            "sent_bytes": sent,
            "images_per_s": 10.0,
            "scaling_efficiency": 0.5,
            "time_to_accuracy_s": t,
        }

    rows = [
        row("alexnet", "none", 4, 366_605_040, 900.0),
        row("alexnet", "powersgd:rank=2", 4, 500_000, 300.0),
        row("squeezenet1_1", "none", 4, 7_412_976, 120.0),
        row("alexnet", "topk:density=0.001", 4, 600_000, None),
        {"model": "squeezenet1_0", "world_size": 4, "error": "a worker died"},
    ]
    result = {"target_accuracy": 0.95, "link": "1gbit"}
    text = "\n".join(lever_lines(rows, result))
    assert text == (
        "- **To 0.95 on 4 hosts at 1gbit:** squeezenet1_1 120 s (7.41 MB/step), "
        "alexnet+powersgd:rank=2 300 s (0.50 MB/step), alexnet 900 s (366.61 MB/step), "
        "alexnet+topk:density=0.001 did not reach it."
    )
    claim = "\n".join(claim_lines(rows, result))
    assert "powersgd" not in claim and "topk" not in claim and "squeezenet1_1" in claim
    assert row_arm({"model": "alexnet", "world_size": 1}) == "alexnet"  # rows before the axis
    assert lever_lines([r for r in rows if r.get("compression") == "none"], result) == []


def test_compare_bad_input(tmp_path, cli):
    refused_here(cli, "compare", "--workers", "1,x", words=("workers takes values like 1,2,4",))
    refused_here(cli, "compare", "--link", "fast", words=("link rate 'fast'",))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_estimate_prints_each_run_and_writes_nothing(tmp_path):
    """--estimate: the cost model on this machine's measured compute x D x each run's steps
    (D from the trial run), per run and in all; no output folder."""
    out = tmp_path / "cmp"
    proc = dist_sqz(
        *["compare", "--models", "squeezenet1_1", "--workers", "1,2", "--steps", "5"],
        *["--warmup-steps", "1", "--image-size", "32", "--batch-size", "2"],
        *["--estimate", "--out", str(out)],
    )
    assert proc.returncode == 0, proc.stderr
    assert "measured squeezenet1_1 at batch 2, 32px on one core" in proc.stdout
    runs = [x for x in proc.stdout.splitlines() if x.strip().startswith("squeezenet1_1 x")]
    assert len(runs) == 2 and all("x 5 steps" in x for x in runs), proc.stdout
    assert "in all:" in proc.stdout
    assert not out.exists()


def test_rest_eta_scales_the_estimates_by_the_rows_run_so_far():
    """The rows left at their up-front estimates times how the finished rows compared with
    theirs (here 1.5x: start-up, retries); an AlexNet row is not priced as a SqueezeNet one."""
    from dist_sqz.compare.run import rest_eta

    expected = {("alexnet", 1): 10.0, ("alexnet", 2): 30.0, ("squeezenet1_1", 1): 2.0}
    took = [("alexnet", 15.0)]
    left = [("alexnet", 2), ("squeezenet1_1", 1)]
    assert rest_eta(took, [("alexnet", 1)], left, expected) == pytest.approx(1.5 * 32.0)
    assert rest_eta([], [], left, expected) is None
    # without estimates (real compute): each row at its own model's mean so far
    assert rest_eta(took, [("alexnet", 1)], left, {}) == pytest.approx(15.0 + 15.0)


def test_a_slow_shaped_link_gives_the_collectives_time_for_the_first_broadcast():
    # AlexNet's 244 MB from rank 0 to 7 peers in turn at 100 Mbit/s / 6, twice over.
    slow = collective_timeout_s("alexnet", 8, shaped_link("100mbit", 6), 300.0)
    assert slow == pytest.approx(2 * 7 * 61_100_840 * 4 * 8 / (100e6 / 6), rel=1e-3)
    assert collective_timeout_s("squeezenet1_1", 8, shaped_link("1gbit", 6), 300.0) == 300.0
    assert collective_timeout_s("alexnet", 8, None, 300.0) == 300.0  # not shaped
    assert collective_timeout_s("alexnet", 1, "1mbit", 300.0) == 300.0  # nothing to send
    # The broadcast on its own: 3 peers in turn, 244 MB each at 33 Mbit/s.
    at_3 = first_broadcast_s("alexnet", 4, shaped_link("100mbit", 3))
    assert at_3 == pytest.approx(3 * 61_100_840 * 4 * 8 / (100e6 / 3), rel=1e-3)
    assert first_broadcast_s("alexnet", 4, None) == 0.0


@pytest.mark.integration
def test_compare_with_compressors(tmp_path):
    """Rows for every (model, compressor, N), each run with its variant's settings; the
    report ranks the arms; the cost model prices the compressor."""
    out = tmp_path / "cmp"
    proc = dist_sqz(
        "compare",
        "--models",
        "squeezenet1_1",
        "--workers",
        "2",
        "--steps",
        "4",
        "--warmup-steps",
        "1",
        "--compression",
        "none,topk:density=0.01",
        "--dilation",  # fixed: no row measured again at a larger D (this machine's 2 cores)
        "3",
        "--wandb",
        "offline",
        "--out",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["compression"] == ["none", "topk:density=0.01"]
    # Encoding measured here on one core before the runs (the cost model column prices it),
    # and padded in them.
    profile = json.loads((out / "profile.json").read_text())
    measured = profile["models"]["squeezenet1_1"]["fp32"]["8"]["compress_s"]["topk:density=0.01"]
    assert measured > 0
    rows = {r["arm"]: r for r in result["rows"]}
    assert set(rows) == {"squeezenet1_1", "squeezenet1_1+topk:density=0.01"}
    none, topk = rows["squeezenet1_1"], rows["squeezenet1_1+topk:density=0.01"]
    assert none["payload_bytes"] == 4_941_984 and none["compression"] == "none"
    assert topk["compression"] == "topk:density=0.01" and topk["model"] == "squeezenet1_1"
    assert topk["sent_bytes"] < none["sent_bytes"] / 10
    assert none["compress_time_s"] == 0 and topk["compress_time_s"] > 0
    run = yaml.safe_load((out / "configs" / "squeezenet1_1+topk_density=0.01-n2.yaml").read_text())
    assert run["compression"] == "topk" and run["compression_density"] == 0.01
    assert run["pad_encoding"] is True
    assert topk["cost_model_compress_time_s"] == pytest.approx(measured)
    # W&B: each run's config names its compressor; the comparison's table has the columns.
    (wandb_file,) = (out / "runs" / "squeezenet1_1+topk_density=0.01-n2").glob("**/*.wandb")
    assert read_offline_run(wandb_file)["config"]["compression"] == "topk"
    (table,) = out.glob("wandb/offline-run-*/files/media/table/*.table.json")
    columns = json.loads(table.read_text())["columns"]
    assert {"arm", "compression", "compress_time_s", "sent_bytes"} <= set(columns)
    report = (out / "report.md").read_text()
    assert "## The two levers" in report and "squeezenet1_1+topk:density=0.01" in report
    bad = dist_sqz("compare", "--compression", "topk:rank=2", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "takes density" in bad.stderr
    assert not (tmp_path / "x").exists()

"""Emulated multi-host runs in network namespaces (root). These skip only where namespaces
are not permitted, and fail instead when DIST_SQZ_REQUIRE_NETNS=1 (as .ci/run sets)."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from dist_sqz.cluster import Cluster
from dist_sqz.cluster.launch import run_on_hosts
from tests.helpers import base_env, cluster_leftovers, dist_sqz, read_run

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_netns")]


def test_three_hosts_exact_and_wire_bytes(tmp_path, tiny):
    """A torchvision BatchNorm model named as torchvision names it, its buffers broadcast
    from rank 0 before each forward (DDP's default): gradients (ring all-reduce, sent
    2(N-1)/N) and buffers (broadcast, sent = payload) counted to the wire, within 2%."""
    out = tmp_path / "run"
    proc = dist_sqz(
        "cluster",
        "run",
        "--hosts",
        "3",
        "--link",
        "1gbit",
        "--",
        "-m",
        "dist_sqz",
        "train",
        *tiny,
        "--model",
        "mobilenet_v3_small",
        "--out",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics, summary = read_run(out)
    grads, buffers = 4 * 2_542_856, 48_720
    for m in metrics:
        assert (m["payload_bytes"], m["sent_bytes"]) == (grads + buffers, 13_610_619)
        assert m["wire_bytes"] >= m["sent_bytes"]
        if not m["warmup"]:  # the first step also carries connection set-up
            assert m["wire_bytes"] / m["sent_bytes"] <= 1.02, m
    assert 1.0 <= summary["wire_over_sent"] <= 1.02
    assert summary["replicas_consistent"] is True
    assert summary["launcher"] == "torchrun" and summary["world_size"] == 3
    assert re.search(r"host 2 \(10\.213\.\d+\.3\): exit 0", proc.stdout), proc.stdout


@pytest.mark.alone  # leaves a stale cluster, which any cluster started beside would remove
def test_failure_tears_down_and_stale_cluster_is_cleaned(tmp_path):
    # A killed run's leftovers: a cluster brought up by a process that then died.
    up = "from dist_sqz.cluster import Cluster; Cluster(2, '100mbit').up()"
    subprocess.run([sys.executable, "-c", up], check=True, env=base_env())
    assert cluster_leftovers()
    proc = dist_sqz(
        "cluster",
        "run",
        "--hosts",
        "2",
        "--",
        "-m",
        "dist_sqz",
        "train",
        "--model",
        "no_such_model",
        timeout=180,
    )
    assert proc.returncode == 1
    assert re.search(r"host 1 \(10\.213\.\d+\.2\): exit 1", proc.stdout), proc.stdout
    assert "unknown model 'no_such_model'" in proc.stdout + proc.stderr  # host 0's output


def test_two_clusters_at_once(tmp_path, tiny):
    """A second cluster started while the first trains: private names and subnets, neither
    touches the other, both finish with consistent replicas."""
    procs, outs = [], []
    for k in range(2):
        out = tmp_path / f"run{k}"
        outs.append(out)
        cmd = [sys.executable, "-m", "dist_sqz", "cluster", "run", "--hosts", "2", "--"]
        cmd += ["-m", "dist_sqz", "train", *tiny, "--steps", "300", "--out", str(out)]
        procs.append(
            subprocess.Popen(
                cmd, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
        # start the second once the first trains; check the first still does once both do
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert procs[0].poll() is None, procs[0].communicate()[0][-3000:]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    prefixes = set()
    for p, log, out in zip(procs, logs, outs, strict=True):
        assert p.returncode == 0, log[-3000:]
        prefixes.add(re.search(r"cluster: (dsqz\d+) up", log).group(1))
        metrics, summary = read_run(out)
        assert summary["replicas_consistent"] is True and len(metrics) == 300
    assert len(prefixes) == 2


def test_compare_alexnet_vs_squeezenet(tmp_path):
    out = tmp_path / "cmp"
    proc = dist_sqz(
        "compare",
        "--models",
        "alexnet,squeezenet1_1",
        "--workers",
        "1,2",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
        "--batch-size",
        "2",
        "--link",
        "1gbit",
        "--compute",
        "real",  # bytes are the point here; emulated compute has tests of its own
        "--out",
        str(out),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["compute"]["kind"] == "real"
    rows = {(r["model"], r["world_size"]): r for r in result["rows"]}
    assert result["emulated_hosts"] is True and len(rows) == 4
    alex, sq = rows["alexnet", 2], rows["squeezenet1_1", 2]
    assert round(alex["payload_bytes"] / sq["payload_bytes"], 2) == 49.45
    for r in (alex, sq):
        assert r["sent_bytes"] == r["payload_bytes"]  # 2(N-1)/N = 1 at N = 2
        assert 1.0 <= r["wire_over_sent"] <= 1.10
    assert rows["alexnet", 1]["scaling_efficiency"] == 1.0
    assert sq["scaling_efficiency"] > alex["scaling_efficiency"]
    for name in ("report.md", "bytes_per_step.png", "scaling_efficiency.png", "throughput.png"):
        assert (out / name).stat().st_size > 0
    assert "49.45x" in (out / "report.md").read_text()


def test_cut_link_fails_within_timeout_and_keeps_checkpoint(tmp_path):
    import threading

    import torch

    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "last.pt"
    with Cluster(2, "1gbit") as cluster:

        def cut_when_checkpointed():
            deadline = time.time() + 200
            while time.time() < deadline:
                try:
                    if torch.load(ckpt, weights_only=True)["step"] >= 2:
                        break
                except (FileNotFoundError, RuntimeError, EOFError):
                    pass
                time.sleep(0.05)
            cluster.cut(1)
            cut_at.append(time.time())

        cut_at: list[float] = []
        watcher = threading.Thread(target=cut_when_checkpointed)
        watcher.start()
        codes = run_on_hosts(
            cluster,
            [
                "-m",
                "dist_sqz",
                "train",
                "--model",
                "squeezenet1_1",
                "--image-size",
                "32",
                "--batch-size",
                "2",
                "--steps",
                "100000",
                "--warmup-steps",
                "1",
                "--checkpoint-every",
                "1",
                "--timeout-s",
                "10",
                "--out",
                str(out),
            ],
            timeout_s=240,
            log_dir=tmp_path / "logs",
        )
        watcher.join()
    # ended by the collective timeout, not by run_on_hosts' own 240 s (exit 124)
    assert cut_at and codes[0] != 0 and 124 not in codes, codes
    for host in (0, 1):
        log = (tmp_path / "logs" / f"host{host}.log").read_text()
        assert "a collective failed or timed out" in log and "last checkpoint kept" in log
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] >= 2 and "model" in state
    assert not (out / "summary.json").exists()


def _train_pid_on_host(host: int, out) -> int | None:
    """The training worker (not the torchrun agent) of run `out` on emulated host `host`."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in re.findall(rf"^(dsqz\d+-h{host})\b", names, re.M):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if str(out).encode() in cmd and b"torch.distributed.run" not in cmd:
                return int(pid)
    return None


@pytest.mark.parametrize("host", [0, 1])
def test_killed_worker_is_restarted_and_resumes(tmp_path, shared_run, host):
    """SIGKILL host 0's worker (rank 0: it writes the checkpoints; its host's agent holds the
    rendezvous store) or host 1's mid-run: torchrun restarts both workers, they resume from
    checkpoints/last.pt and end where an uninterrupted run ends. Each host's agent counts its
    own failures, and the two agents' restarts can cross: a host whose worker is still alive
    when the other re-joins restarts too, and it can take a few rounds to settle (1 restart
    failed 1 run in 5 here), so the budget is 10."""
    import signal

    import torch

    from tests.helpers import RESUME_ARGS as ARGS

    out = tmp_path / "cut"
    cmd = [
        sys.executable,
        "-m",
        "dist_sqz",
        "cluster",
        "run",
        "--hosts",
        "2",
        "--link",
        "1gbit",
        "--max-restarts",
        "10",
        "--",
        "-m",
        "dist_sqz",
        "train",
        *ARGS,
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ckpt = out / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    step = 0
    while step < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
        try:
            step = torch.load(ckpt, weights_only=True)["step"]
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
    pid = _train_pid_on_host(host, out)
    assert pid and 4 <= step < 14, (pid, step)
    os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output[-4000:]
    assert "elastic restart: resuming" in output and "from step" in output
    metrics, summary = read_run(out)
    _, reference = read_run(shared_run(2, *ARGS))
    assert [m["step"] for m in metrics] == list(range(1, 15))
    assert summary["param_checksum"] == reference["param_checksum"]
    assert summary["replicas_consistent"] is True


@pytest.mark.alone  # efficiencies measured here, compared
def test_scaling_efficiency_is_invariant_under_dilation(tmp_path):
    """Emulated H100 compute on an emulated 1 Gbit/s link, at two dilations D: links are
    shaped to 1gbit/D and compute padded x D, and the efficiency comes out the same."""
    eff = {}
    for d in (5, 10):
        out = tmp_path / f"d{d}"
        proc = dist_sqz(
            "compare",
            "--models",
            "squeezenet1_1",
            "--workers",
            "1,2",
            "--steps",
            "6",
            "--warmup-steps",
            "2",
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--link",
            "1gbit",
            "--compute-profile",
            "h100",
            "--dilation",
            str(d),
            "--out",
            str(out),
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        result = json.loads((out / "results.json").read_text())
        rows = {r["world_size"]: r for r in result["rows"]}
        assert rows[2]["shaped_link"] == f"{1e9 / d:.0f}bit"
        # Reported times are undilated: the 1-worker step is the profile's compute.
        assert rows[1]["step_time_s"] == pytest.approx(0.01817, rel=0.15)
        assert rows[2]["payload_bytes"] == 4_941_984
        eff[d] = rows[2]["scaling_efficiency"]
    # Comm at 1 Gbit/s (~40 ms) dominates compute (18 ms): efficiency well below 1...
    assert 0.15 < eff[5] < 0.8
    # ...and the same at both dilations.
    assert eff[10] == pytest.approx(eff[5], rel=0.12), eff

"""Launching torchrun jobs: on every host of an emulated cluster, or locally; and killing a
job outright. torchrun starts its workers in sessions of their own, so a job is killed by
walking its process tree, not by signalling one process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dist_sqz.cluster.netns import IFACE
from dist_sqz.errors import Stopped

if TYPE_CHECKING:
    from dist_sqz.cluster.netns import Cluster

RDZV_PORT = 29400


def descendants(pid: int) -> list[int]:
    """pid's children, grandchildren... read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal pid and every process under it (workers in their own sessions included)."""
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def torchrun_argv(
    cluster: Cluster, i: int, args: Sequence[str], job_id: str, nproc: int = 1
) -> list[str]:
    return [
        "ip",
        "netns",
        "exec",
        cluster.ns(i),
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={cluster.hosts}",
        f"--node-rank={i}",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={cluster.addr(0)}:{RDZV_PORT}",
        # One per job, the same on every host: torchrun hands it to workers as
        # TORCHELASTIC_RUN_ID, which tells a restarted worker the run directory is its job's.
        f"--rdzv-id={job_id}",
        f"--local-addr={cluster.addr(i)}",
        # Namespaces share the machine's hostname, so say outright who hosts the store.
        f"--rdzv-conf=is_host={int(i == 0)}",
        f"--max-restarts={cluster.max_restarts}",
        *args,
    ]


STOP_GRACE_S = 60.0  # torchrun gives its workers 30 s after forwarding a signal


def wait_all(procs: list[subprocess.Popen], timeout_s: float, grace_s: float = 30) -> list[int]:
    """Wait for every process; return their exit statuses.

    On timeout every one still running is killed (with its tree) and gets status 124. Once
    one fails, the others get `grace_s` to finish (a host cut off from the rendezvous store
    would wait on it far longer), then are killed with status 137. SIGTERM or SIGINT while
    waiting is forwarded to every process (torchrun hands it on to its workers, which stop
    at a step boundary with a checkpoint); what is still running `STOP_GRACE_S` later is
    killed, and `Stopped` is raised once all are gone.
    """
    deadline = time.monotonic() + timeout_s
    codes: list[int | None] = [None] * len(procs)
    killed_code = 124
    got: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        got.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stopping = False
        while any(c is None for c in codes):
            for k, p in enumerate(procs):
                if codes[k] is None:
                    codes[k] = p.poll()
            now = time.monotonic()
            if got and not stopping:
                stopping, deadline, killed_code = True, now + STOP_GRACE_S, 137
            if any(c not in (None, 0) for c in codes) and now + grace_s < deadline:
                deadline, killed_code = now + grace_s, 137
            if now > deadline:
                break
            time.sleep(0.1)
    finally:
        for k, p in enumerate(procs):
            if p.poll() is None:
                kill_tree(p.pid)
                p.wait()
                codes[k] = killed_code
        for s, handler in old.items():
            signal.signal(s, handler)
    if got:
        raise Stopped(f"stopped by {signal.Signals(got[0]).name}", 128 + got[0])
    return [int(c) for c in codes]


def run_on_hosts(
    cluster: Cluster,
    args: Sequence[str],
    timeout_s: float = 600,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    nproc: int = 1,
    grace_s: float = 30,
) -> list[int]:
    """Start `torchrun ... args` on every host; wait; return each host's exit status.

    Each host's output goes to `log_dir/host<i>.log`; with no `log_dir`, host 0's goes to
    this process's stdout and the others' is dropped.
    """
    if not cluster.up_:
        raise RuntimeError("cluster is not up")
    env = {
        **os.environ,
        **(env or {}),
        "GLOO_SOCKET_IFNAME": IFACE,
        "DIST_SQZ_WIRE_IFACE": IFACE,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    job_id = f"{cluster.prefix}-{uuid.uuid4().hex[:12]}"
    procs = []
    for i in range(cluster.hosts):
        out = None if i == 0 else subprocess.DEVNULL
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            out = (log_dir / f"host{i}.log").open("w")
        procs.append(
            subprocess.Popen(
                torchrun_argv(cluster, i, args, job_id, nproc),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return wait_all(procs, timeout_s, grace_s)


def run_local(
    args: Sequence[str],
    nproc: int,
    log: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> int:
    """`torchrun --standalone --nproc-per-node N args` on this host, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", *args]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        return wait_all([proc], timeout_s)[0]

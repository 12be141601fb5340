"""A comparison's rows as Slurm jobs: `compare --launcher slurm`.

Each row (arm x N) is one `sbatch` job of N / workers-per-node nodes whose batch script runs
one `srun` task per node; each task starts torchrun with a c10d rendezvous on the step's
first node, its name mapped to the address Slurm knows it by (`scontrol show node`:
`NodeAddr`), not to whatever the name resolves to (the field's most reported failure: a head
node that resolves to localhost or to nothing). Inside an allocation (`SLURM_JOB_ID` set)
the rows run as `srun` steps on subsets of its nodes instead of new jobs.

The scripts are written beside the logs (`OUT/slurm/<row>.sbatch`, `.node.sh`) so a user
can read or rerun exactly what ran. Plain `sbatch`/`srun` command lines rather than
submitit: the row is a torchrun job per node, not a pickled Python function, its scripts
are what a user's own sbatch file would hold, and no Python package must be importable on
the nodes beyond dist_sqz itself.

Everything that can be checked is checked before the first job: sbatch on PATH, the
partition, enough nodes in it, and `sbatch --test-only` with the row's options (account,
time limit, extra arguments). A job's id, node list, state, exit reason, queue wait and run
time go into its row. With a time limit the job gets SIGTERM `signal_s` before it
(`--signal=TERM@S`): torchrun hands it to the workers, which stop at a step boundary with a
checkpoint, and `--resume` continues the row from there. SIGTERM or Ctrl-C to `compare`
cancels the job it is waiting for (`scancel`) before it stops.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dist_sqz.compare.slurm_client import (
    Job,
    Patience,
    fields,
    find_job,
    job_info,
    squeue_state,
    unreached,
)
from dist_sqz.errors import Stopped, UsageError

CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel", "srun")
POLL_S = 2.0
GONE_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


@dataclass
class SlurmOptions:
    """What compare's Slurm settings say (CompareConfig keys of the same names)."""

    partition: str = ""
    account: str = ""
    time_limit: str = ""
    gpus_per_node: int = 0
    sbatch_args: str = ""
    socket_ifname: str = ""
    signal_s: int = 120
    controller_wait_s: float = 600.0

    @property
    def per_node(self) -> int:
        return max(1, self.gpus_per_node)

    def sbatch_flags(self, nodes: int) -> list[str]:
        # --no-requeue: a row whose node fails (or that is preempted) ends, recorded with
        # Slurm's reason, and --resume continues it from its checkpoint; requeued, it went
        # back to PENDING (BeginTime) and compare waited on it for good.
        flags = [f"--nodes={nodes}", "--ntasks-per-node=1", "--no-requeue"]
        if self.partition:
            flags.append(f"--partition={self.partition}")
        if self.account:
            flags.append(f"--account={self.account}")
        if self.time_limit:
            flags += [f"--time={self.time_limit}", f"--signal=TERM@{self.signal_s}"]
        if self.gpus_per_node:
            flags.append(f"--gpus-per-node={self.gpus_per_node}")
        return flags + shlex.split(self.sbatch_args)


def slurm_options(cfg: Any) -> SlurmOptions:
    """The Slurm settings of a compare config."""
    from dist_sqz.options import pick

    return pick(SlurmOptions, cfg)


def in_allocation() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def _out(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise UsageError(f"{what}: {why[-1] if why else f'exit {proc.returncode}'}")
    return proc.stdout


def partition_nodes(partition: str) -> tuple[str, int]:
    """(the partition's name, its node count): the named one, or the default."""
    text = _out(
        ["scontrol", "show", "partition", "-o", *([partition] if partition else [])],
        f"partition {partition or '(default)'}",
    )
    for line in text.splitlines():
        f = fields(line)
        if partition or f.get("Default") == "YES":
            return f.get("PartitionName", partition), int(f.get("TotalNodes", "0"))
    raise UsageError("Slurm has no default partition here: give --partition")


def preflight(opts: SlurmOptions, workers: list[int]) -> None:
    """Every check that needs no job, then `sbatch --test-only` of the largest row."""
    lack = [c for c in CLIENTS if shutil.which(c) is None]
    if lack:
        raise UsageError(
            f"--launcher slurm needs Slurm's clients on PATH ({', '.join(lack)} not found); "
            "run compare on a login node, or `dist-sqz cluster up --slurm` to test here"
        )
    odd = [n for n in workers if n % opts.per_node]
    if odd:
        raise UsageError(
            f"--workers {odd[0]} is not a whole number of nodes of {opts.per_node} workers "
            "(--gpus-per-node)"
        )
    name, total = partition_nodes(opts.partition)
    most = max(workers) // opts.per_node
    if most > total:
        raise UsageError(
            f"--workers {max(workers)} needs {most} nodes; partition {name} has {total}"
        )
    if not in_allocation():
        _out(
            ["sbatch", "--test-only", *opts.sbatch_flags(most), "--wrap", "true"],
            "sbatch --test-only refused the rows' options",
        )


def node_script(train_args: list[str], per_node: int) -> str:
    """What each node runs: torchrun with a c10d rendezvous on the step's first node.

    Addresses are Slurm's own (`NodeAddr`), never what a node's name resolves to; which node
    hosts the rendezvous store is said outright (torchrun would otherwise resolve this
    node's hostname to decide, and fail where it resolves to nothing)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=$SLURM_STEP_NUM_NODES",
        f"--nproc-per-node={per_node}",
        "--rdzv-backend=c10d",
        '--rdzv-endpoint="$head_addr:$port"',
        '--rdzv-id="$SLURM_JOB_ID.$SLURM_STEP_ID"',
        '--local-addr="$my_addr"',
        '--rdzv-conf="is_host=$is_host"',
        "--max-restarts=0",
        *(shlex.quote(a) for a in train_args),
    ]
    lines = [
        "#!/bin/bash",
        "# One node of a dist-sqz compare row (written by dist_sqz/compare/slurm.py).",
        "node_addr() { scontrol show node \"$1\" | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p'; }",
        'head=$(scontrol show hostnames "$SLURM_STEP_NODELIST" | head -n1)',
        'head_addr=$(node_addr "$head" | head -n1); head_addr=${head_addr:-$head}',
        'my_addr=$(node_addr "$SLURMD_NODENAME" | head -n1); my_addr=${my_addr:-$SLURMD_NODENAME}',
        # No --socket-ifname: the interface that carries this node's NodeAddr, for gloo,
        # NCCL and the wire counter (gloo would resolve the hostname itself, and may pick
        # an interface the other nodes cannot reach).
        "my_ip=$(getent ahostsv4 \"$my_addr\" | awk 'NR == 1 {print $1}')",
        "my_ip=${my_ip:-$my_addr}",
        "my_if=$(ip -o -4 addr show 2>/dev/null"
        ' | awk -v a="$my_ip" \'{split($4, p, "/"); if (p[1] == a) {print $2; exit}}\')',
        'if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && [ -n "$my_if" ]; then',
        '  export GLOO_SOCKET_IFNAME="$my_if" NCCL_SOCKET_IFNAME="$my_if"',
        '  export DIST_SQZ_WIRE_IFACE="$my_if"',
        "fi",
        'export DIST_SQZ_NODE_ADDR="$my_addr"',
        'is_host=$([ "$SLURMD_NODENAME" = "$head" ] && echo 1 || echo 0)',
        "port=$(( 20000 + (SLURM_JOB_ID * 7 + SLURM_STEP_ID) % 20000 ))",
        "exec " + " ".join(cmd),
    ]
    return "\n".join(lines) + "\n"


def cancel(job_id: str, patience: Patience, wait_s: float = 60) -> None:
    """scancel the job and wait (bounded) until squeue no longer lists it."""
    patience.run(["scancel", job_id], job_id)
    deadline = time.monotonic() + wait_s
    while squeue_state(patience, job_id) and time.monotonic() < deadline:
        time.sleep(0.5)


def run_row(
    opts: SlurmOptions,
    train_args: list[str],
    n: int,
    folder: Path,
    tag: str,
    logs: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> Job:
    """Run one row as a job (or, inside an allocation, a step) and wait for it; its Job."""
    nodes = n // opts.per_node
    folder.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    node = folder / f"{tag}.node.sh"
    node.write_text(node_script(train_args, opts.per_node))
    env = {**os.environ, **(env or {})}
    if opts.socket_ifname:
        env |= {
            "GLOO_SOCKET_IFNAME": opts.socket_ifname,
            "NCCL_SOCKET_IFNAME": opts.socket_ifname,
            "DIST_SQZ_WIRE_IFACE": opts.socket_ifname,
        }
    log = logs / "host0.log"
    srun = [
        "srun",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        "bash",
        str(node),
    ]
    if in_allocation():
        return _run_step(srun, log, env, timeout_s)
    out = folder.parent
    patience = Patience(opts.controller_wait_s, f"; `dist-sqz compare --resume {out}` waits for it")
    marker = folder / f"{tag}.job"  # the row's job while it may still be listed
    if marker.exists():  # a comparison that ended without Slurm's last word on it
        job = Job(marker.read_text().strip())
        if squeue_state(patience, job.job_id):
            print(f"    picking up job {job.job_id}, still listed", flush=True)
            return _waited(job, timeout_s, patience, marker)
        marker.unlink()
        done = job_info(job, patience)
        print(f"    job {job.job_id} ended while compare was away: {done.state}", flush=True)
        if done.state not in ("UNKNOWN", "CANCELLED", "FAILED", "NODE_FAIL"):
            return done  # it ran to its end meanwhile: its outcome is the row's
    batch = folder / f"{tag}.sbatch"
    flags = [
        f"--job-name=dsqz-{tag}",
        f"--output={log}",
        "--open-mode=append",
        *opts.sbatch_flags(nodes),
    ]
    submit = ["sbatch", "--parsable", *flags, str(batch)]
    head = f"#!/bin/bash\n# dist-sqz compare row {tag}, submitted as:\n# {shlex.join(submit)}\n"
    batch.write_text(f"{head}{shlex.join(srun)}\n")
    job_id = _submit(submit, f"dsqz-{tag}", env, patience)
    marker.write_text(job_id + "\n")
    return _waited(Job(job_id), timeout_s, patience, marker)


def pending_job(folder: Path, tag: str) -> bool:
    """Whether row `tag` has a job Slurm has not yet said is gone (a comparison that ended
    waiting for it): `--resume` waits for that job instead of starting the row afresh."""
    return (folder / f"{tag}.job").exists()


def _submit(cmd: list[str], name: str, env: dict[str, str], patience: Patience) -> str:
    """sbatch, once: a submission the controller may have taken before it went silent is
    looked for by its name when it answers again, never submitted twice."""
    while True:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if not unreached(proc):
            break
        patience.wait("sbatch", "")
        found = find_job(patience, name)
        if found:
            return found
    if proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise UsageError(f"sbatch: {why[-1] if why else f'exit {proc.returncode}'}")
    return proc.stdout.strip().split(";")[0]


def _waited(job: Job, timeout_s: float, patience: Patience, marker: Path) -> Job:
    job = _wait(job, timeout_s, patience)
    marker.unlink(missing_ok=True)  # Slurm said it left the queue
    return job


def _wait(job: Job, timeout_s: float, patience: Patience) -> Job:
    """Poll the job until it is gone; SIGTERM/SIGINT meanwhile cancel it, then Stopped."""
    got: list[int] = []
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {
            s: signal.signal(s, lambda signum, _f: got.append(signum))
            for s in (signal.SIGTERM, signal.SIGINT)
        }
    shown, t0 = "", time.monotonic()
    try:
        while not got:
            state = squeue_state(patience, job.job_id)  # only Slurm's answer ends the wait
            if not state or state in GONE_STATES:
                break
            if state != shown:
                shown = state
                print(
                    f"    job {job.job_id}: {state.lower()} "
                    f"({time.monotonic() - t0:.0f}s after submission)",
                    flush=True,
                )
            if time.monotonic() - t0 > timeout_s:
                cancel(job.job_id, patience)  # run_timeout_s: recorded as Slurm's CANCELLED
                break
            time.sleep(POLL_S)
    finally:
        if got:
            cancel(job.job_id, patience)
        for s, handler in old.items():
            signal.signal(s, handler)
    job = job_info(job, patience)
    if got:
        raise Stopped(
            f"stopped by {signal.Signals(got[0]).name} (job {job.job_id} cancelled)", 128 + got[0]
        )
    return job


def _run_step(srun: list[str], log: Path, env: dict[str, str], timeout_s: float) -> Job:
    from dist_sqz.cluster.launch import wait_all

    with log.open("a") as out:
        proc = subprocess.Popen(
            srun, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        t0 = time.monotonic()
        code = wait_all([proc], timeout_s)[0]
    job = Job(
        os.environ["SLURM_JOB_ID"],
        state="COMPLETED" if code == 0 else "FAILED",
        exit_code=f"{code}:0",
        run_s=time.monotonic() - t0,
        queue_s=0.0,
    )
    job.nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    return job

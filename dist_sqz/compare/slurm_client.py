"""Slurm's client commands, patient with a controller that goes away and comes back.

A controller restart, an upgrade, a fail-over, or a busy controller ("Socket timed out on
send/recv operation") makes `squeue`, `scontrol`, `sacct`, `sbatch` and `scancel` fail for a
while, with nothing wrong with any job. Only Slurm's own answer ends a wait here: a command
that could not reach the controller is retried with backoff (1 s, doubling to 15 s), with a
progress line every 30 s ("controller not answering for 40 s; job 2 keeps running"), for
at most `wait_s` in one outage; past it, `ControllerGone` ends the comparison in one line,
the job left as it is and named. A command the controller answered and refused (an unknown
job id, a bad option) is an answer, not an outage.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from dist_sqz.errors import RunFailure

# What the clients print when they did not reach the controller (Slurm 20-24).
_UNREACHED = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "zero bytes were transmitted or received",
    "slurm_persist_conn_open",
    "communication connection failure",
    "unable to connect",
    "slurmctld not responding",
)
PROGRESS_S = 30.0


def fields(text: str) -> dict[str, str]:
    """`scontrol show ... -o` output as {key: value}."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


class ControllerGone(RunFailure):
    """The controller did not answer within the bound; the job (if any) is left running."""


def unreached(proc: subprocess.CompletedProcess) -> bool:
    text = (proc.stderr + proc.stdout).lower()
    return proc.returncode != 0 and any(s in text for s in _UNREACHED)


class Patience:
    """One comparison's budget for a silent controller, and what it says meanwhile."""

    def __init__(self, wait_s: float, resume_hint: str = "") -> None:
        self.wait_s, self.resume_hint = wait_s, resume_hint
        self.since: float | None = None  # when the current outage began
        self.said = 0.0
        self.delay = 1.0
        self.outages: list[float] = []  # seconds of each outage seen, for the record

    def run(self, cmd: list[str], job: str = "", env: dict | None = None):
        """`cmd`'s CompletedProcess once the controller answers it (an error it returns
        included); ControllerGone past the bound."""
        while True:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if not unreached(proc):
                if self.since is not None:
                    self.outages.append(time.monotonic() - self.since)
                    print(
                        f"    controller answering again after {self.outages[-1]:.0f}s",
                        flush=True,
                    )
                self.since, self.delay = None, 1.0
                return proc
            self.wait(cmd[0], job)

    def wait(self, what: str, job: str) -> None:
        now = time.monotonic()
        keeps = f"; job {job} keeps running" if job else ""
        if self.since is None:
            self.since, self.said = now, now
            print(
                f"    controller not answering {what}{keeps}; waiting up to {self.wait_s:g}s",
                flush=True,
            )
        silent = now - self.since
        if silent > self.wait_s:
            left = f"job {job} is left as it is (scancel {job} to stop it); " if job else ""
            raise ControllerGone(
                f"the Slurm controller has not answered {what} for {silent:.0f}s; {left}"
                f"nothing was recorded as failed{self.resume_hint}"
            )
        if now - self.said >= PROGRESS_S:
            self.said = now
            print(f"    controller not answering for {silent:.0f}s{keeps}", flush=True)
        time.sleep(self.delay)
        self.delay = min(15.0, self.delay * 2)


def squeue_state(patience: Patience, job_id: str) -> str:
    """The job's state while squeue lists it; "" once Slurm says it has left the queue."""
    proc = patience.run(["squeue", "-h", "-j", job_id, "-o", "%T"], job_id)
    if proc.returncode != 0:  # answered: "Invalid job id specified" (gone past MinJobAge)
        return ""
    return proc.stdout.strip()


def find_job(patience: Patience, name: str) -> str:
    """The id of a listed job named `name` (this comparison's row), or ""."""
    proc = patience.run(["squeue", "-h", "-n", name, "-o", "%i"])
    ids = proc.stdout.split() if proc.returncode == 0 else []
    return ids[0] if ids else ""


@dataclass
class Job:
    """One row's job (or step), as Slurm reports it."""

    job_id: str
    state: str = "PENDING"
    reason: str = ""
    exit_code: str = ""
    nodes: str = ""
    queue_s: float | None = None
    run_s: float | None = None

    def record(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "nodes": self.nodes,
            "queue_s": self.queue_s,
            "run_s": self.run_s,
        }


def _seconds(t0: str, t1: str) -> float | None:
    try:
        a = time.mktime(time.strptime(t0, "%Y-%m-%dT%H:%M:%S"))
        b = time.mktime(time.strptime(t1, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return max(0.0, b - a)


def job_info(job: Job, patience: Patience) -> Job:
    """The job's final state from scontrol (kept MinJobAge), else sacct where there is
    accounting; state UNKNOWN when neither knows it."""
    proc = patience.run(["scontrol", "show", "job", "-o", job.job_id], job.job_id)
    if proc.returncode == 0 and "JobState=" in proc.stdout:
        f = fields(proc.stdout)
        job.state, job.reason = f.get("JobState", "UNKNOWN"), f.get("Reason", "")
        job.exit_code, job.nodes = f.get("ExitCode", ""), f.get("NodeList", "")
        job.queue_s = _seconds(f.get("SubmitTime", ""), f.get("StartTime", ""))
        job.run_s = _seconds(f.get("StartTime", ""), f.get("EndTime", ""))
        return job
    if shutil.which("sacct"):
        columns = "State,Reason,ExitCode,NodeList,Submit,Start,End"
        proc = patience.run(["sacct", "-n", "-P", "-X", "-j", job.job_id, "-o", columns])
        parts = proc.stdout.strip().splitlines()[0].split("|") if proc.stdout.strip() else []
        if len(parts) == 7:
            job.state, job.reason, job.exit_code, job.nodes = (
                p.split()[0] if i == 0 else p for i, p in enumerate(parts[:4])
            )
            job.queue_s, job.run_s = _seconds(parts[4], parts[5]), _seconds(parts[5], parts[6])
            return job
    job.state = "UNKNOWN"
    return job

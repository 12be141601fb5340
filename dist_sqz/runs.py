"""Running `dist-sqz train` from another program: the one place that builds a run's command
line, launches it (alone, under torchrun, on emulated hosts), watches a long run's held-out
accuracy, and says in one line why a run failed. `compare`, `design-space`, the benchmarks
and the tests' helpers all go through here, so a run is launched and read the same way
everywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dist_sqz.observe.metrics import read_jsonl

ERROR_PREFIX = "dist-sqz: error:"
STOPPED_PREFIX = "dist-sqz: stopped by"  # a run stopped by a signal, with its checkpoint


def train_command(*args: str, nproc: int | None = None, python: bool = True) -> list[str]:
    """`dist-sqz train ARGS` as a command: alone (`nproc` None) or under `torchrun
    --standalone --nproc-per-node N`; `python=False` leaves out the interpreter, for a
    launcher that adds its own (a `cluster run`, mpirun)."""
    head = [sys.executable] if python else []
    if nproc is not None:
        head += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [*head, "-m", "dist_sqz", "train", *args]


TRIAL_STEPS = 4  # the first is warm-up: the median of 3 real steps


def trial_run(settings: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """A short run of these train settings on one worker under torchrun, padded to its
    compute profile at D = 1 (real compute where it has none), before the rows that use them:
    `overhead_s`, what a run costs here beyond its steps (the launcher's and the worker's
    start-up and imports, building the model, the no-communication probe steps, the first
    batches, and the final checkpoint: AlexNet's is ~460 MB, written and fsynced), paid
    again by every run; and `schedule`, its last steps' pads, each (real time from its
    phase's start, due time) at D = 1 (None without a profile), from which compare finds the
    D each row needs (`compare.trial.need_for`). `env`: what the rows' workers get
    on top of this process's environment (OMP_NUM_THREADS=1 for one core each: with both
    cores SqueezeNet 1.0's trial needed D = 1.7, with one 4.1). 0 and None if the trial
    fails (the run itself will then say why)."""
    with tempfile.TemporaryDirectory(prefix="dsqz-trial-") as tmp:
        out = Path(tmp) / "run"
        keys = {**settings, "steps": TRIAL_STEPS, "warmup_steps": 1, "lr_warmup_steps": 0}
        keys |= {"dilation": 1.0, "target_accuracy": None, "eval_every": 0}
        keys |= {"checkpoint_every": 0, "wandb": "off", "out": str(out)}
        keys |= {"trace_steps": "", "torch_profile_steps": ""}
        config = Path(tmp) / "trial.yaml"
        config.write_text(yaml.safe_dump(keys))
        t0 = time.perf_counter()
        code, _ = run_captured(train_command("--config", str(config), nproc=1), env)
        wall = time.perf_counter() - t0
        if code != 0:
            return {"overhead_s": 0.0, "schedule": None}
        steps = [r["step_time_s"] for r in read_jsonl(out / "metrics.jsonl")]
        summary = json.loads((out / "summary.json").read_text())
        return {
            "overhead_s": max(0.0, wall - sum(steps)),
            "schedule": summary.get("emulation_schedule"),
        }


def resume_or_start(out: Path, *start_args: str) -> list[str]:
    """The train arguments that continue the run in `out` from its last checkpoint when one
    was left (a run stopped part-way), else `start_args` (the caller clears `out` first)."""
    if (out / "checkpoints" / "last.pt").exists() and not (out / "summary.json").exists():
        return ["--resume", str(out)]
    return list(start_args)


def failure_line(text: str) -> str:
    """One line saying why a run failed, from its output: the run's own error line (or the
    line of a run a signal stopped), else the exit code or signal torchrun reports for a
    worker, else the last exception line."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    ours = [x for x in lines if x.startswith((ERROR_PREFIX, STOPPED_PREFIX))]
    if ours:
        return ours[-1][:300]
    died = [x.split(":", 1)[1].strip() for x in lines if x.startswith(("exitcode", "traceback"))]
    if died:
        return "a worker died: " + "; ".join(dict.fromkeys(died))[:280]
    raised = [x for x in lines if re.match(r"^[A-Za-z_.]+(Error|Exception): ", x)]
    return (raised or lines or ["no output"])[-1][:300]


def logs_failure(logs: Path) -> str:
    """`failure_line` over every host's log in a job's log folder."""
    text = "\n".join(log.read_text(errors="replace") for log in sorted(logs.glob("host*.log")))
    return failure_line(text) if text.strip() else "no log"


def run_logged(cmd: Sequence[str], log: Path) -> tuple[int, str]:
    """Run `cmd` with its output appended to `log` (a file, not a pipe: were this process
    stopped, workers writing to a closed pipe would die at their next line instead of
    checkpointing on SIGTERM); (exit status, its failure line or '')."""
    log.parent.mkdir(parents=True, exist_ok=True)
    before = log.stat().st_size if log.exists() else 0  # earlier attempts' lines stay above
    with log.open("a") as sink:
        code = subprocess.run(list(cmd), stdout=sink, stderr=subprocess.STDOUT).returncode
    if code == 0:
        return 0, ""
    with log.open() as f:
        f.seek(before)
        return code, f"{failure_line(f.read())} (log: {log})"


def run_captured(cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `cmd`, its output captured, with `env` on top of this process's environment;
    (exit status, its failure line or '')."""
    full = {**os.environ, **env} if env else None
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=full)
    why = "" if proc.returncode == 0 else failure_line(proc.stdout + "\n" + proc.stderr)
    return proc.returncode, why


def run_job(
    args: list[str],
    n: int,
    emulate: bool,
    link: str,
    delay: str,
    logs: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> bool:
    """One torchrun job of n workers running `python ARGS`: on n emulated hosts, or as local
    processes; True when every host's torchrun exited 0."""
    from dist_sqz.cluster import Cluster
    from dist_sqz.cluster.launch import run_local, run_on_hosts

    logs.mkdir(parents=True, exist_ok=True)
    if emulate and n > 1:
        with Cluster(n, link, delay) as cluster:
            codes = run_on_hosts(cluster, args, timeout_s=timeout_s, log_dir=logs, env=env)
        return all(c == 0 for c in codes)
    return run_local(args, n, logs / "host0.log", timeout_s, env) == 0


def accuracy_curve(run_dir: Path) -> list[list[float]]:
    """[step, time_s, accuracy] at each evaluation of a run; time_s sums step_time_s up to
    the step, as time_to_accuracy_s does."""
    curve, t = [], 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        t += r["step_time_s"]
        if r.get("accuracy") is not None:
            curve.append([r["step"], t, r["accuracy"]])
    return curve


class Watch(threading.Thread):
    """Prints a run's newest evaluation every `every_s` while it trains (long runs); use as
    a context manager around the run."""

    def __init__(self, run_dir: Path, every_s: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.every_s, self.stop = run_dir, every_s, threading.Event()

    def __enter__(self) -> Watch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def run(self) -> None:
        shown = None
        while not self.stop.wait(self.every_s):
            try:
                curve = accuracy_curve(self.run_dir)
            except (OSError, ValueError, KeyError):
                continue
            if curve and curve[-1] != shown:
                shown = curve[-1]
                print(
                    f"    step {shown[0]}: held-out accuracy {shown[2]:.3f} "
                    f"({shown[1]:.0f}s of training)",
                    flush=True,
                )

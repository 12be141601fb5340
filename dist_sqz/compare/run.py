"""Running a comparison: each (model, N) row as a torchrun job on emulated hosts, recorded
in results.json after every row, resumable, then the report."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import yaml

from dist_sqz import runs
from dist_sqz.cluster import namespaces_permitted
from dist_sqz.compare.arms import arm_name, row_arm, split_arm
from dist_sqz.compare.derive import derive
from dist_sqz.compare.plan import (
    CONFIG_FILE,
    collective_timeout_s,
    compute_mode,
    format_estimate,
    run_config,
    shaped_link,
    wandb_group,
)
from dist_sqz.compare.slurm import pending_job, preflight, slurm_options
from dist_sqz.compare.slurm import run_row as slurm_row
from dist_sqz.compare.trial import plan_rows, trials
from dist_sqz.compute.modes import LATE_FRACTION, measure_local, measure_local_encoding
from dist_sqz.config import CompareConfig, TrainConfig
from dist_sqz.errors import Stopped, UsageError
from dist_sqz.observe.metrics import eta_seconds

RESULT_FIELDS = (
    "payload_bytes",
    "sent_bytes",
    "wire_bytes",
    "wire_over_sent",
    "step_time_s",
    "comm_time_s",
    "comm_busy_s",
    "exposed_comm_s",
    "compress_time_s",
    "step_time_max_s",
    "straggler_wait_s",
    "comm_overlap_frac",
    "compute_time_s",
    "images_per_s",
    "final_loss",
    "replicas_consistent",
    "emulation_late_s",
    "accuracy",
    "steps_to_accuracy",
    "images_to_accuracy",
    "time_to_accuracy_s",
    "eval_time_s",
    "broadcast_buffers",  # None for runs made before the setting: they did not
)


CURVES = ("scaling_efficiency", "images_per_s", "sent_bytes")  # W&B: against N, per arm


class Comparison:
    """The rows of one comparison folder: planned, run, recorded, resumed."""

    def __init__(self, cfg: CompareConfig, out: Path, resume: bool) -> None:
        self.cfg, self.out = cfg, out
        self.mode = compute_mode(cfg, out / "profile.json")
        arms = cfg.arms or [arm_name(m, c) for m in cfg.models for c in cfg.compression]
        self.plan = [(a, n) for a in arms for n in cfg.workers]
        self.configs = {
            (a, n): run_config(
                cfg.model_copy(update={"wandb_group": self.group}),
                split_arm(a)[0],
                n,
                self.mode,
                self.run_dir(a, n),
                split_arm(a)[1],
            )
            for a, n in self.plan
        }
        self.need: dict[tuple[str, int], float | None] = {}  # per row: D one worker needs
        self.rows: list[dict[str, Any]] = []
        if resume:
            old = json.loads((out / "results.json").read_text()) if self.has_results else {}
            self.rows = [r for r in old.get("rows", []) if not r.get("error")]
        self.slurm = slurm_options(cfg) if cfg.launcher == "slurm" else None
        self.emulate, why = (False, "") if self.slurm else namespaces_permitted()
        self.note = (
            "Rows ran as Slurm jobs (one per row; srun steps inside an allocation) on the "
            "cluster's own network; links not shaped by compare."
            if self.slurm
            else ""
            if self.emulate
            else f"Emulated hosts unavailable ({why}); ran local processes over loopback, "
            "links unshaped."
        )

    @property
    def group(self) -> str:
        return wandb_group(self.cfg, self.out)

    @property
    def has_results(self) -> bool:
        return (self.out / "results.json").exists()

    def run_dir(self, arm: str, n: int) -> Path:
        return self.out / "runs" / f"{arm.replace(':', '_')}-n{n}"

    @property
    def worker_env(self) -> dict[str, str] | None:
        """What each worker's environment gains: one thread each in local mode, where every
        worker is padded to one core's measured times."""
        return {"OMP_NUM_THREADS": "1"} if self.mode.kind == "local" else None

    def dilation(self, arm: str, n: int) -> float:
        """The row's D, chosen before it runs from its model's trial run."""
        return self.mode.dilation_for(n, self.need.get((arm, n)))

    def done(self, arm: str, n: int) -> bool:
        return any(row_arm(r) == arm and r["world_size"] == n for r in self.rows)

    def prepare(self) -> None:
        """Write the comparison's own config; measure the local profile (once: a resumed
        comparison pads to the same times)."""
        self.out.mkdir(parents=True, exist_ok=True)
        keep = self.cfg.model_dump(exclude_unset=True) | {"out": str(self.out), "resume": ""}
        (self.out / CONFIG_FILE).write_text(yaml.safe_dump(keep, sort_keys=False))
        self.measure(self.out / "profile.json")

    def measure(self, path: Path) -> None:
        """In local mode, profile each model at its runs' shape into `path` (if not there),
        and each compressor's encoding (where the profile lacks it)."""
        if self.mode.kind == "local" and not path.exists():
            first: dict[str, TrainConfig] = {}
            for arm, n in self.plan:
                first.setdefault(split_arm(arm)[0], self.configs[arm, n])
            shapes = {m: (c.batch_size, c.image_size) for m, c in first.items()}
            measure_local(shapes, path)
        if self.mode.kind == "local":  # encoding too (a resumed comparison: what it lacks)
            arms = dict.fromkeys(split_arm(a) for a, _ in self.plan)
            measure_local_encoding(list(arms), path)

    def run_row(self, arm: str, n: int, d: float) -> dict[str, Any]:
        """Run (or continue) one row at dilation d; its row, or its error."""
        cfg, run_dir = self.configs[arm, n], self.run_dir(arm, n)
        link = shaped_link(self.cfg.link, d)
        shaped = link if self.emulate and n > 1 else None
        timeout = collective_timeout_s(split_arm(arm)[0], n, shaped, cfg.timeout_s)
        emulated = {"dilation": d} if self.mode.kind != "real" else {}
        cfg = TrainConfig.build(cfg.to_dict(), emulated, {"timeout_s": timeout})
        tag = run_dir.name
        logs = self.out / "logs" / tag
        config_file = self.out / "configs" / f"{tag}.yaml"
        args = runs.resume_or_start(run_dir, "--config", str(config_file))
        if args[0] != "--resume" and not (self.slurm and pending_job(self.out / "slurm", tag)):
            shutil.rmtree(run_dir, ignore_errors=True)
            config_file.parent.mkdir(parents=True, exist_ok=True)
            config_file.write_text(cfg.dump_yaml())
        args = runs.train_command(*args, python=False)
        env = self.worker_env
        row: dict[str, Any] = row_key(arm, n) | {"dilation": d}
        with runs.Watch(run_dir) if self.cfg.target_accuracy is not None else nullcontext():
            if self.slurm:
                job = slurm_row(
                    self.slurm, args, n, self.out / "slurm", tag, logs, self.cfg.kill_after_s, env
                )
                ok, row["slurm"] = job.state == "COMPLETED", job.record()
            else:
                ok = runs.run_job(
                    args, n, self.emulate, link, self.cfg.delay, logs, self.cfg.kill_after_s, env
                )
        row |= {"shaped_link": shaped}
        row |= {"batch_size": cfg.batch_size, "image_size": cfg.image_size}
        if not ok or not (run_dir / "summary.json").exists():
            row["error"] = runs.logs_failure(logs)
            if self.slurm:
                job_line = f"Slurm job {job.job_id} {job.state}"
                row["error"] = f"{job_line} ({job.reason}): {row['error']}"
            return row
        s = json.loads((run_dir / "summary.json").read_text())
        row["params"] = s["params"]
        row.update({k: s.get(k) for k in RESULT_FIELDS})
        late = row.get("emulation_late_s") or 0.0
        row["overran_padding"] = (
            self.mode.kind != "real" and late > LATE_FRACTION * row["step_time_s"]
        )
        if self.cfg.target_accuracy is not None:
            row["accuracy_curve"] = runs.accuracy_curve(run_dir)
        return row

    def result(self, elapsed_s: float) -> dict[str, Any]:
        rows = sorted(self.rows, key=lambda r: self.plan.index((row_arm(r), r["world_size"])))
        derive(rows, self.cfg, self.mode, self.emulate or self.slurm is not None)
        return {
            "models": self.cfg.models,
            "compression": self.cfg.compression,
            "workers": self.cfg.workers,
            "steps": self.cfg.steps,
            "warmup_steps": self.cfg.warmup_steps,
            "link": self.cfg.link if self.emulate else "loopback",
            "emulated_hosts": self.emulate,
            "note": self.note,
            "image_size": self.cfg.image_size,
            "batch_size": self.cfg.batch_size,
            "data": self.cfg.data,
            "target_accuracy": self.cfg.target_accuracy,
            "backend": self.cfg.backend,
            "launcher": self.cfg.launcher,
            "cluster": self.cfg.cluster,
            "compute": self.mode.to_dict() | {"description": self.mode.describe(self.out)},
            "rows": rows,
            "failed": [
                f"{row_arm(r)} x {r['world_size']}: {r['error']}" for r in rows if r.get("error")
            ],
            "elapsed_s": elapsed_s,
        }

    def write(self, elapsed_s: float) -> dict[str, Any]:
        result = self.result(elapsed_s)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(self.out / "results.json")
        return result


def row_key(arm: str, n: int) -> dict[str, Any]:
    model, compression = split_arm(arm)
    return {"model": model, "compression": compression, "arm": arm, "world_size": n}


def rest_eta(
    took: list[tuple[str, float]],
    done: list[tuple[str, int]],
    left: list[tuple[str, int]],
    expected: dict[tuple[str, int], float],
) -> float | None:
    """Seconds the rows `left` will take: their up-front estimates scaled by how the rows
    run so far compared with theirs (start-up, evaluations and retries at 2 x D included);
    without estimates, each row at its model's mean so far (`metrics.eta_seconds`)."""
    if not took:
        return None
    if expected and all(row in expected for row in done + left):
        planned = sum(expected[row] for row in done)
        scale = sum(t for _, t in took) / planned if planned > 0 else 1.0
        return scale * sum(expected[row] for row in left)
    return eta_seconds(took, [m for m, _ in left])


def compare(cfg: CompareConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Run every (model, N) not yet finished; write results.json after each row, then the
    report. Returns the result; its `failed` lists rows that did not finish."""
    t_called = time.perf_counter()
    if cfg.compute_profile:
        from dist_sqz.compute.profiles import compute_times, load_profile

        prof = load_profile(cfg.compute_profile)
        for m in cfg.models:
            compute_times(prof, m, cfg.compute_batch_size, cfg.compute_precision)
    if cfg.wandb != "off":
        from dist_sqz.observe.wandb_sink import import_wandb

        import_wandb()
    if not resume and not cfg.estimate and out.exists() and any(out.iterdir()):
        raise UsageError(
            f"{out} already holds a comparison; choose another --out or --resume {out}"
        )
    if cfg.launcher == "slurm" and not cfg.estimate:
        preflight(slurm_options(cfg), cfg.workers)  # before any job or folder
    comp = Comparison(cfg, out, resume)
    if comp.note:
        print(f"dist-sqz compare: note: {comp.note}", flush=True)
    todo = [(m, n) for m, n in comp.plan if not comp.done(m, n)]
    if cfg.estimate:  # measure into a scratch folder: an estimate writes nothing
        with tempfile.TemporaryDirectory(prefix="dsqz-estimate-") as scratch:
            profile = Path(scratch) / "profile.json"
            comp.measure(profile)
            prof = str(profile) if comp.mode.kind == "local" else comp.mode.profile
            known = trials(comp, todo)
            plan = plan_rows(comp, todo, prof, known)
    else:
        comp.prepare()
        print(f"dist-sqz compare: {comp.mode.describe()}", flush=True)
        known = trials(comp, todo, out / "overhead.json")
        plan = plan_rows(comp, todo, comp.mode.profile, known)
    if plan:
        print("dist-sqz compare: expected wall time per run here (cost model x D x step budget):")
        spent = time.perf_counter() - t_called
        target = cfg.target_accuracy is not None
        print(format_estimate(plan, target, spent, bool(known)), flush=True)
    if cfg.estimate:
        return {"estimate": plan}
    if resume:
        print(
            f"dist-sqz compare: resuming {out}: {len(comp.plan) - len(todo)} of "
            f"{len(comp.plan)} rows done",
            flush=True,
        )
    t_start = time.perf_counter()
    took: list[tuple[str, float]] = []  # (model, wall seconds) of the rows run here
    expected = {(r["model"], r["world_size"]): r["wall_s"] for r in plan}
    for k, (arm, n) in enumerate(todo):
        where = f"emulated hosts, {cfg.link}" if comp.emulate and n > 1 else "local"
        where = f"Slurm, {n // comp.slurm.per_node} node(s)" if comp.slurm else where
        d = comp.dilation(arm, n)
        eta = rest_eta(took, todo[:k], todo[k:], expected)
        eta = f"; rest ETA {eta / 60:.0f} min" if eta is not None else ""
        print(
            f"[{k + 1}/{len(todo)}] {arm} on {n} worker(s) ({where}, D={d:g}{eta}) ...",
            flush=True,
        )
        t0 = time.perf_counter()
        try:
            row = comp.run_row(arm, n, d)
        except Stopped as e:  # forwarded to the run, which saved a checkpoint if it could
            comp.rows.append(row_key(arm, n) | {"dilation": d, "error": str(e)})
            comp.write(time.perf_counter() - t_start)
            raise Stopped(
                f"compare {e} during {arm} x {n}; rows so far in {out}/results.json; "
                f"continue with `dist-sqz compare --resume {out}`",
                e.status,
            ) from None
        if row.get("overran_padding") and comp.mode.adaptive and cfg.target_accuracy is None:
            # This machine could not keep up at D: the row measured its cores. Once more,
            # with twice the room.
            print(f"    {_row_line(row)}; once more at D={2 * d:g}", flush=True)
            row = comp.run_row(arm, n, 2 * d)
        comp.rows.append(row)
        comp.write(time.perf_counter() - t_start)
        took.append((arm, time.perf_counter() - t0))
        print(f"    {_row_line(row)} ({time.perf_counter() - t0:.0f}s)", flush=True)
    result = comp.write(time.perf_counter() - t_start)
    from dist_sqz.compare.report import write_compare_report

    write_compare_report(result, out)
    if cfg.wandb != "off":
        from dist_sqz.compare.report import PLOTS
        from dist_sqz.observe.wandb_sink import WandbSink

        meta = {k: v for k, v in result.items() if k != "rows"}
        sink = WandbSink(cfg.wandb, cfg.wandb_project, comp.group, "compare", meta, out, "compare")
        sink.log_curves(result["rows"], CURVES)
        sink.log_table(
            "results",
            [{k: v for k, v in r.items() if k != "accuracy_curve"} for r in result["rows"]],
        )
        sink.log_images([out / p for p in PLOTS if (out / p).exists()])
        sink.close()
    return result


def _row_line(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"failed: {row['error']}"
    line = f"{row['step_time_s'] * 1e3:.0f} ms/step, {row['images_per_s']:.1f} img/s"
    if row.get("accuracy") is not None:
        reached = row.get("steps_to_accuracy")
        line += f", accuracy {row['accuracy']:.3f}" + (
            f" (target at step {reached}, {row['time_to_accuracy_s']:.0f}s)"
            if reached
            else " (target not reached)"
        )
    if row.get("overran_padding"):
        line += f"; real work overran the padding by {row['emulation_late_s'] * 1e3:.0f} ms"
    job = row.get("slurm")
    if job and job.get("queue_s") is not None:
        line += (
            f"; Slurm job {job['job_id']}: queued {job['queue_s']:.0f}s, ran {job['run_s']:.0f}s"
        )
    return line

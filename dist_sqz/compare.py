"""`dist-sqz compare`: the main job. Trains each model at each worker count and compares.

Each multi-worker run is a torchrun multi-node job on an emulated cluster (one host per
worker, every link shaped to `link`), so bytes cross a real network stack and `wire_bytes`
comes from the kernel's counters. Where namespaces are not permitted, runs fall back to
local processes on loopback, and the report says so. Compute is emulated by default as N
copies of this machine (`compute_modes`), so scaling efficiency measures the network rather
than workers sharing cores. With `target_accuracy` every run trains with its model's recipe
until the held-out accuracy reaches it, and rows gain time to accuracy.

Long comparisons are first-class: every run's config is built and validated before the first
starts; results.json is rewritten after every row; a failed row is recorded with its error
line and the rest go on; `--resume OUT` keeps finished rows and continues a row that left a
checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from dist_sqz.cluster import Cluster, namespaces_permitted
from dist_sqz.cluster.launch import run_local
from dist_sqz.compute_modes import LATE_FRACTION, PROFILE_DILATION, ComputeMode, measure_local
from dist_sqz.config import CompareConfig, TrainConfig
from dist_sqz.errors import Stopped, UsageError
from dist_sqz.metrics import scaling_efficiency
from dist_sqz.units import format_rate, parse_rate

RESULT_FIELDS = (
    "payload_bytes",
    "sent_bytes",
    "wire_bytes",
    "wire_over_sent",
    "step_time_s",
    "comm_time_s",
    "comm_busy_s",
    "exposed_comm_s",
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
)
CONFIG_FILE = "compare.yaml"


def shaped_link(link: str, dilation: float) -> str:
    """The link that is actually shaped under time dilation D: D times slower (tc units)."""
    return format_rate(parse_rate(link) / dilation)


def compute_mode(cfg: CompareConfig, profile_path: Path) -> ComputeMode:
    if cfg.compute_profile:
        return ComputeMode(
            "profile",
            cfg.compute_profile,
            cfg.compute_precision,
            cfg.profile_batch_size,
            cfg.dilation or PROFILE_DILATION,
        )
    if cfg.compute == "real":
        return ComputeMode("real")
    return ComputeMode("local", str(profile_path), "fp32", 0, cfg.dilation)


def run_config(cfg: CompareConfig, model: str, n: int, mode: ComputeMode, out: Path) -> TrainConfig:
    """The training config of one compare run (validated: a model that cannot take the
    image size fails here, before anything starts)."""
    if cfg.target_accuracy is not None:
        from dist_sqz.recipes import recipe

        base = {**recipe(cfg.data, model, cfg.recipes), "target_accuracy": cfg.target_accuracy}
    else:
        base = {
            "model": model,
            "steps": cfg.steps,
            "warmup_steps": cfg.warmup_steps,
            "image_size": cfg.image_size,
            "batch_size": cfg.batch_size,
            "log_every": cfg.steps,
        }
    return TrainConfig.build(
        base,
        {
            "out": str(out),
            "wandb": cfg.wandb,
            "wandb_project": cfg.wandb_project,
            "wandb_group": cfg.wandb_group,
            **mode.train_settings(n),
        },
    )


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
    """One torchrun job of n workers: on n emulated hosts, or as local processes."""
    logs.mkdir(parents=True, exist_ok=True)
    if emulate and n > 1:
        with Cluster(n, link, delay) as cluster:
            codes = cluster.run(args, timeout_s=timeout_s, log_dir=logs, env=env)
        return all(c == 0 for c in codes)
    return run_local(args, n, logs / "host0.log", timeout_s, env) == 0


def analytic_efficiency(compute_s: float, sent_bytes: float, link_bps: float) -> float:
    """compute / (compute + sent / link): ring all-reduce with no overlap, bandwidth-bound."""
    return compute_s / (compute_s + sent_bytes * 8 / link_bps)


def accuracy_curve(run_dir: Path) -> list[list[float]]:
    """[step, time_s, accuracy] at each evaluation; time_s sums step_time_s up to the step,
    as time_to_accuracy_s does."""
    curve, t = [], 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        t += r["step_time_s"]
        if r.get("accuracy") is not None:
            curve.append([r["step"], t, r["accuracy"]])
    return curve


class _Watch(threading.Thread):
    """Prints a run's newest evaluation every `every_s` while it trains (long runs)."""

    def __init__(self, run_dir: Path, every_s: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.every_s, self.stop = run_dir, every_s, threading.Event()

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


class Comparison:
    """The rows of one comparison folder: planned, run, recorded, resumed."""

    def __init__(self, cfg: CompareConfig, out: Path, resume: bool) -> None:
        self.cfg, self.out = cfg, out
        self.mode = compute_mode(cfg, out / "profile.json")
        self.plan = [(m, n) for m in cfg.models for n in cfg.workers]
        self.configs = {
            (m, n): run_config(
                cfg.model_copy(update={"wandb_group": self.group}),
                m,
                n,
                self.mode,
                self.run_dir(m, n),
            )
            for m, n in self.plan
        }
        self.rows: list[dict[str, Any]] = []
        if resume:
            old = json.loads((out / "results.json").read_text()) if self.has_results else {}
            self.rows = [r for r in old.get("rows", []) if not r.get("error")]
        self.emulate, why = namespaces_permitted()
        self.note = (
            ""
            if self.emulate
            else f"Emulated hosts unavailable ({why}); ran local processes over loopback, "
            "links unshaped."
        )

    @property
    def group(self) -> str:
        return self.cfg.wandb_group or f"compare-{self.out.name}"

    @property
    def has_results(self) -> bool:
        return (self.out / "results.json").exists()

    def run_dir(self, model: str, n: int) -> Path:
        return self.out / "runs" / f"{model}-n{n}"

    def done(self, model: str, n: int) -> bool:
        return any(r["model"] == model and r["world_size"] == n for r in self.rows)

    def prepare(self) -> None:
        """Write the comparison's own config; measure the local profile (once: a resumed
        comparison pads to the same times)."""
        self.out.mkdir(parents=True, exist_ok=True)
        keep = self.cfg.model_dump(exclude_unset=True) | {"out": str(self.out), "resume": ""}
        (self.out / CONFIG_FILE).write_text(yaml.safe_dump(keep, sort_keys=False))
        self.measure(self.out / "profile.json")

    def measure(self, path: Path) -> None:
        """In local mode, profile each model at its runs' shape into `path` (if not there)."""
        if self.mode.kind == "local" and not path.exists():
            shapes = {
                m: (
                    self.configs[m, self.plan[0][1]].batch_size,
                    self.configs[m, self.plan[0][1]].image_size,
                )
                for m in self.cfg.models
            }
            measure_local(shapes, path)

    def run_row(self, model: str, n: int, d: float) -> dict[str, Any]:
        """Run (or continue) one row at dilation d; its row, or its error."""
        cfg, run_dir = self.configs[model, n], self.run_dir(model, n)
        if self.mode.kind != "real":
            cfg = TrainConfig.build(cfg.to_dict(), {"dilation": d})
        tag = run_dir.name
        logs = self.out / "logs" / tag
        config_file = self.out / "configs" / f"{tag}.yaml"
        if (run_dir / "checkpoints" / "last.pt").exists() and not (
            run_dir / "summary.json"
        ).exists():
            args = ["-m", "dist_sqz", "train", "--resume", str(run_dir)]
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            config_file.parent.mkdir(parents=True, exist_ok=True)
            config_file.write_text(cfg.dump_yaml())
            args = ["-m", "dist_sqz", "train", "--config", str(config_file)]
        link = shaped_link(self.cfg.link, d)
        env = {"OMP_NUM_THREADS": "1"} if self.mode.kind == "local" else None
        watch = _Watch(run_dir) if self.cfg.target_accuracy is not None else None
        if watch:
            watch.start()
        try:
            ok = run_job(
                args, n, self.emulate, link, self.cfg.delay, logs, self.cfg.run_timeout_s, env
            )
        finally:
            if watch:
                watch.stop.set()
        row: dict[str, Any] = {"model": model, "world_size": n, "dilation": d}
        row |= {"shaped_link": link if self.emulate and n > 1 else None}
        row |= {"batch_size": cfg.batch_size, "image_size": cfg.image_size}
        if not ok or not (run_dir / "summary.json").exists():
            row["error"] = _last_error(logs) or "failed"
            return row
        s = json.loads((run_dir / "summary.json").read_text())
        row["params"] = s["params"]
        row.update({k: s.get(k) for k in RESULT_FIELDS})
        late = row.get("emulation_late_s") or 0.0
        row["overran_padding"] = (
            self.mode.kind != "real" and late > LATE_FRACTION * row["step_time_s"]
        )
        if self.cfg.target_accuracy is not None:
            row["accuracy_curve"] = accuracy_curve(run_dir)
        return row

    def result(self, elapsed_s: float) -> dict[str, Any]:
        rows = sorted(self.rows, key=lambda r: self.plan.index((r["model"], r["world_size"])))
        _derive(rows, self.cfg, self.mode, self.emulate)
        return {
            "models": self.cfg.models,
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
            "compute": self.mode.to_dict() | {"description": self.mode.describe()},
            "rows": rows,
            "failed": [
                f"{r['model']} x {r['world_size']}: {r['error']}" for r in rows if r.get("error")
            ],
            "elapsed_s": elapsed_s,
        }

    def write(self, elapsed_s: float) -> dict[str, Any]:
        result = self.result(elapsed_s)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(self.out / "results.json")
        return result


def estimate(comp: Comparison, todo: list[tuple[str, int]], profile: str) -> list[dict[str, Any]]:
    """Each run's expected wall time here: the cost model's step time on `profile` (the
    comparison's measured or named compute) and link, times D, times its step budget (an
    upper bound with a target, which stops a run early; evaluations come on top)."""
    from dist_sqz.profiles import load_profile
    from dist_sqz.simulate import Network, simulate

    if comp.mode.kind == "real":
        return []
    prof = load_profile(profile)
    net = Network(bandwidth_Bps=parse_rate(comp.cfg.link) / 8)
    rows = []
    for model, n in todo:
        cfg = comp.configs[model, n]
        batch = comp.mode.batch_size or cfg.batch_size
        step_s = simulate([model], [n], net, prof, batch, comp.mode.precision)[0]["step_time_s"]
        d = comp.mode.dilation_for(n)
        rows.append(
            {
                "model": model,
                "world_size": n,
                "dilation": d,
                "step_s": step_s,
                "steps": cfg.steps,
                "wall_s": step_s * d * cfg.steps,
            }
        )
    return rows


def format_estimate(rows: list[dict[str, Any]], target: bool) -> str:
    bound = "at most " if target else ""
    lines = [
        f"    {r['model']} x {r['world_size']}: {r['step_s']:.3f} s/step emulated x D="
        f"{r['dilation']:g} x {bound}{r['steps']} steps = {bound}{_hours(r['wall_s'])}"
        for r in rows
    ]
    total = sum(r["wall_s"] for r in rows)
    lines.append(f"    in all: {bound}{_hours(total)} of wall time here (evaluations extra)")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _last_error(logs: Path) -> str:
    """One line saying why a run failed, from its logs: the run's own error line, else the
    signal or exit code torchrun reports for the worker, else the last exception line."""
    lines: list[str] = []
    for log in sorted(logs.glob("host*.log")):
        lines += [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    ours = [x for x in lines if x.startswith("dist-sqz: error:")]
    if ours:
        return ours[-1][:300]
    died = [x.split(":", 1)[1].strip() for x in lines if x.startswith(("exitcode", "traceback"))]
    if died:
        return "a worker died: " + "; ".join(dict.fromkeys(died))[:280]
    raised = [x for x in lines if re.match(r"^[A-Za-z_.]+(Error|Exception): ", x)]
    return (raised or lines or ["no log"])[-1][:300]


def _derive(rows: list[dict], cfg: CompareConfig, mode: ComputeMode, emulate: bool) -> None:
    """Efficiency against the same model's 1-worker row; the cost model fed the same profile
    and link; with a target, the projection of time to accuracy onto an H100 cluster."""
    from dist_sqz.profiles import load_profile
    from dist_sqz.simulate import Network, simulate

    link_bps = parse_rate(cfg.link)
    net = Network(bandwidth_Bps=link_bps / 8)
    prof = load_profile(mode.profile) if mode.kind != "real" else None
    h100 = load_profile("h100") if any(r.get("steps_to_accuracy") for r in rows) else None
    for row in rows:
        if row.get("error"):
            continue
        base = next(
            (
                r
                for r in rows
                if r["model"] == row["model"] and r["world_size"] == 1 and not r.get("error")
            ),
            None,
        )
        row["scaling_efficiency"] = (
            scaling_efficiency(row["images_per_s"], row["world_size"], base["images_per_s"])
            if base
            else None
        )
        row["analytic_efficiency"] = (
            analytic_efficiency(base["step_time_s"], row["sent_bytes"], link_bps)
            if base and emulate
            else None
        )
        batch = cfg.profile_batch_size if mode.kind == "profile" else None
        row["simulated_efficiency"] = None
        if prof is not None:
            b = batch or int(next(iter(prof["models"][row["model"]][mode.precision])))
            sim = simulate([row["model"]], [row["world_size"]], net, prof, b, mode.precision)
            row["simulated_efficiency"] = sim[0]["scaling_efficiency"]
        if row.get("steps_to_accuracy") and h100 is not None:
            try:
                step_s = simulate(
                    [row["model"]], [row["world_size"]], net, h100, row["batch_size"], "bf16_cl"
                )[0]["step_time_s"]
            except UsageError:  # a model the h100 profile does not hold: no projection
                continue
            row["h100_projected_time_to_accuracy_s"] = row["steps_to_accuracy"] * step_s


def compare(cfg: CompareConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Run every (model, N) not yet finished; write results.json after each row, then the
    report. Returns the result; its `failed` lists rows that did not finish."""
    if cfg.compute_profile:
        from dist_sqz.profiles import compute_times, load_profile

        prof = load_profile(cfg.compute_profile)
        for m in cfg.models:
            compute_times(prof, m, cfg.profile_batch_size, cfg.compute_precision)
    if cfg.wandb != "off":
        from dist_sqz.wandb_sink import import_wandb

        import_wandb()
    if not resume and not cfg.estimate and out.exists() and any(out.iterdir()):
        raise UsageError(
            f"{out} already holds a comparison; choose another --out or --resume {out}"
        )
    comp = Comparison(cfg, out, resume)
    if comp.note:
        print(f"dist-sqz compare: note: {comp.note}", flush=True)
    todo = [(m, n) for m, n in comp.plan if not comp.done(m, n)]
    if cfg.estimate:  # measure into a scratch folder: an estimate writes nothing
        with tempfile.TemporaryDirectory(prefix="dsqz-estimate-") as scratch:
            profile = Path(scratch) / "profile.json"
            comp.measure(profile)
            plan = estimate(
                comp, todo, str(profile) if comp.mode.kind == "local" else comp.mode.profile
            )
    else:
        comp.prepare()
        print(f"dist-sqz compare: {comp.mode.describe()}", flush=True)
        try:
            plan = estimate(comp, todo, comp.mode.profile)
        except UsageError:  # a model the cost model cannot take: the runs need no estimate
            plan = []
    if plan:
        print("dist-sqz compare: expected wall time per run here (cost model x D x step budget):")
        print(format_estimate(plan, cfg.target_accuracy is not None), flush=True)
    if cfg.estimate:
        return {"estimate": plan}
    if resume:
        print(
            f"dist-sqz compare: resuming {out}: {len(comp.plan) - len(todo)} of "
            f"{len(comp.plan)} rows done",
            flush=True,
        )
    t_start = time.perf_counter()
    for k, (model, n) in enumerate(todo):
        where = f"emulated hosts, {cfg.link}" if comp.emulate and n > 1 else "local"
        d = comp.mode.dilation_for(n)
        eta = ""
        if k:
            left = (time.perf_counter() - t_start) / k * (len(todo) - k)
            eta = f"; rest ETA {left / 60:.0f} min"
        print(
            f"[{k + 1}/{len(todo)}] {model} on {n} worker(s) ({where}, D={d:g}{eta}) ...",
            flush=True,
        )
        t0 = time.perf_counter()
        try:
            row = comp.run_row(model, n, d)
        except Stopped as e:  # forwarded to the run, which saved a checkpoint if it could
            comp.rows.append({"model": model, "world_size": n, "dilation": d, "error": str(e)})
            comp.write(time.perf_counter() - t_start)
            raise Stopped(
                f"compare {e} during {model} x {n}; rows so far in {out}/results.json; "
                f"continue with `dist-sqz compare --resume {out}`",
                e.status,
            ) from None
        if row.get("overran_padding") and comp.mode.adaptive and cfg.target_accuracy is None:
            # This machine could not keep up at D: the row measured its cores. Once more,
            # with twice the room.
            print(f"    {_row_line(row)}; once more at D={2 * d:g}", flush=True)
            row = comp.run_row(model, n, 2 * d)
        comp.rows.append(row)
        comp.write(time.perf_counter() - t_start)
        print(f"    {_row_line(row)} ({time.perf_counter() - t0:.0f}s)", flush=True)
    result = comp.write(time.perf_counter() - t_start)
    from dist_sqz.report_compare import write_compare_report

    write_compare_report(result, out)
    if cfg.wandb != "off":
        from dist_sqz.report_compare import PLOTS
        from dist_sqz.wandb_sink import WandbSink

        meta = {k: v for k, v in result.items() if k != "rows"}
        sink = WandbSink(cfg.wandb, cfg.wandb_project, comp.group, "compare", meta, out)
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
    return line


def load_for_resume(out: Path) -> CompareConfig:
    """The config a comparison folder was started with (for `--resume OUT`)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"{out} holds no comparison to resume (no {CONFIG_FILE})")
    return CompareConfig.build(yaml.safe_load(path.read_text()))

"""The training loop: short and linear, with timing and accounting beside each step.

Rank 0 owns the run directory (config.yaml, metrics.jsonl, summary.json, checkpoints/).
Randomness is a function of (seed, step, rank): weights come from `seed`, each step reseeds
dropout, batches and their augmentation depend on the step alone, and the learning rate is a
function of the step, so a resumed run retraces the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dist_sqz import checkpoint
from dist_sqz.comm.accounting import StepComm
from dist_sqz.comm.backends import BACKENDS, Backend
from dist_sqz.comm.compression import build_compressor
from dist_sqz.comm.env import LaunchEnv, launch_env, share_cpu_threads
from dist_sqz.config import TrainConfig
from dist_sqz.data import (
    datasets_for,
    default_workers,
    held_out_batches,
    num_classes_of,
    train_batches,
)
from dist_sqz.emulate import EmulatedCompute
from dist_sqz.errors import CommFailure, RunFailure, Stopped, UsageError
from dist_sqz.evaluate import evaluate
from dist_sqz.health import Diverged, NonFiniteGuard, StallWatch
from dist_sqz.metrics import (
    Sink,
    build_summary,
    done_line,
    open_sinks,
    read_jsonl,
    step_record,
    tx_counter,
)
from dist_sqz.models import build_model, check_input_size, count_params
from dist_sqz.optim import lr_at, set_lr, sgd
from dist_sqz.profiles import compute_times, load_profile
from dist_sqz.stopping import StepControl
from dist_sqz.wandb_sink import import_wandb


def _workers(n: int) -> str:
    return f"{n} worker" + ("s" if n != 1 else "")


def step_seed(seed: int, step: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 10_007 + rank) % (2**63)


class Trainer:
    """Composes backend, model, data, compressor and sinks for one run."""

    def __init__(
        self, cfg: TrainConfig, resume: dict[str, Any] | None = None, restarted: bool = False
    ) -> None:
        env = launch_env()
        share_cpu_threads(env)
        self.env: LaunchEnv = env
        self.resume = resume
        self.restarted = restarted
        train_set, held_set = datasets_for(cfg.data, cfg.image_size)
        num_classes = cfg.num_classes or num_classes_of(train_set)
        check_input_size(cfg.model, cfg.image_size, num_classes)
        self.start_step = 0
        if resume is not None:
            if resume.get("world_size", env.world_size) != env.world_size:
                n = resume["world_size"]
                raise UsageError(
                    f"the checkpoint was written by {_workers(n)} but this run has "
                    f"{_workers(env.world_size)}; relaunch with {_workers(n)}"
                )
            self.start_step = int(resume["step"])
            if self.start_step >= cfg.steps:
                raise UsageError(
                    f"the run already finished {self.start_step} steps; pass --steps larger "
                    f"than {self.start_step} to train further"
                )
        if cfg.wandb != "off" and env.is_main:
            import_wandb()  # fail before anything is written
        if cfg.compute_profile:  # a missing profile or model entry fails here, not mid-run
            compute_times(
                load_profile(cfg.compute_profile),
                cfg.model,
                cfg.compute_batch_size or cfg.batch_size,
                cfg.compute_precision,
            )
        # Set by `dist-sqz cluster run`: this host's interface, whose tx bytes are wire_bytes.
        self.tx = tx_counter(os.environ.get("DIST_SQZ_WIRE_IFACE", ""))
        self.backend: Backend = BACKENDS.get(cfg.backend)(cfg, env)

        # Rank 0 alone names the run directory (a timestamp read on every rank could differ).
        name, out = self.backend.agree(lambda: self._run_dir(cfg) if env.is_main else ("", ""))[0]
        self.cfg = cfg = TrainConfig.build(
            cfg.to_dict(), {"name": name, "out": out, "num_classes": num_classes}
        )
        self.out = Path(out)
        self.device = self.backend.device
        pin = self.device.type == "cuda"
        workers = cfg.data_workers
        if workers is None:
            workers = default_workers(cfg.data, env.local_world_size)
        self.batches = train_batches(
            cfg, train_set, num_classes, env.rank, env.world_size, self.start_step, workers, pin
        )
        self.held_out = held_out_batches(cfg, held_set, env.rank, env.world_size, workers)
        if cfg.target_accuracy is not None and self.held_out is None:
            raise UsageError(f"target_accuracy needs a held-out split; {cfg.data} has none")
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, num_classes).to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.model.to(memory_format=self.memory_format)
        self.params = count_params(self.model)
        self.compressor = build_compressor(cfg.compression, cfg)
        self.optimizer = sgd(
            self.model.parameters(),
            lr=cfg.lr,
            # DGC corrects momentum before sparsifying; the optimizer must not apply it again.
            momentum=0.0 if self.compressor.owns_momentum else cfg.momentum,
            nesterov=cfg.nesterov and not self.compressor.owns_momentum,
            weight_decay=cfg.weight_decay,
            fused=cfg.precision != "fp16",
        )
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            # Every rank needs its own state; one that lacks it stops all, and says so.
            needed = self.compressor.has_state
            state = self.backend.agree(
                lambda: checkpoint.load_rank_state(self.out, env.rank, self.start_step, needed)
            )[env.rank]
            self.compressor.load_state_dict(state)
        # fp16 scales the loss so small gradients survive; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        if self.scaler and resume is not None and "scaler" in resume:
            self.scaler.load_state_dict(resume["scaler"])
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.train_model, self.optimizer = self.backend.wrap(
            self.model, self.optimizer, self.compressor
        )
        if cfg.compile:  # of the wrapped model: DDP's optimizer splits graphs at its buckets
            self.train_model = torch.compile(self.train_model)
        self.emu = (
            EmulatedCompute(
                self.model,
                cfg.compute_profile,
                cfg.model,
                cfg.compute_batch_size or cfg.batch_size,
                cfg.compute_precision,
                cfg.dilation,
                num_classes,
            )
            if cfg.compute_profile
            else None
        )
        self.dilation = self.emu.dilation if self.emu else 1.0
        self.sinks: list[Sink] = []
        self.compute_s: float | None = None
        self.control = StepControl(
            self.backend, env.is_main, env.world_size, cfg.checkpoint_every_min
        )
        self.guard = NonFiniteGuard(cfg.skip_nonfinite_steps, env.is_main, env.world_size, cfg.lr)
        self.stall = StallWatch(
            cfg.stall_window,
            max(cfg.warmup_steps, cfg.lr_warmup_steps),
            None if train_set is None else len(train_set.classes),
            num_classes,
            cfg.model,
            cfg.lr,
            cfg.data,
        )
        self.saved_step = self.start_step if resume is not None else None
        self.stall_warned = self.stopped_stalled = False

    def _run_dir(self, cfg: TrainConfig) -> tuple[str, str]:
        name, out = checkpoint.default_out(cfg, self.env.world_size)
        if self.resume is None and not self.restarted:  # a restart before any checkpoint
            checkpoint.check_new_run_dir(Path(out))  # starts over in its own directory
        return name, out

    # -- run directory -------------------------------------------------------------------
    def _open_sinks(self) -> None:
        if not self.env.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(self.cfg.dump_yaml())
        checkpoint.mark_launch(self.out)
        keep = self.start_step if self.resume is not None or self.restarted else None
        if keep is not None:  # the run is not finished until it writes its summary again
            (self.out / "summary.json").unlink(missing_ok=True)
        self.sinks = open_sinks(self.cfg, self.out, keep)

    def _kept(self) -> str:
        """Where the last good state is, for a line that ends the run."""
        if self.saved_step is None:
            return "no checkpoint was written yet"
        path = checkpoint.checkpoint_path(self.out)
        earlier = [p.name for _, p in checkpoint.kept(self.out)]
        also = f" (earlier: {', '.join(earlier)} beside it)" if earlier else ""
        return f"{path} (step {self.saved_step}) is the last good state{also}"

    def _save(self, step: int) -> None:
        """Every rank's state for `step`. A write that fails (a full disk) stops every rank
        here, the one that failed saying why, and the previous checkpoint stays. Parameters
        that are not finite are never saved (replicas are equal: every rank finds it)."""
        self.control.saved()
        if not checkpoint.params_finite(self.model):
            self._fail_together(
                f"the parameters after step {step} are not finite; stopped every rank "
                f"without saving them: {self._kept()}; lower --lr (now {self.cfg.lr:g})",
                Diverged,
            )
        failure: RunFailure | None = None
        try:
            state = self.compressor.state_dict()
            if state:  # per-rank state (residuals) goes beside last.pt, one file per rank
                checkpoint.save_rank_state(
                    self.out, self.env.rank, step, state, self.cfg.keep_checkpoints
                )
            if self.env.is_main:
                checkpoint.save_atomic(
                    {
                        "model": self.model.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "step": step,
                        "config": self.cfg.to_dict(),
                        "world_size": self.env.world_size,
                        **({"scaler": self.scaler.state_dict()} if self.scaler else {}),
                    },
                    checkpoint.checkpoint_path(self.out),
                    keep=self.cfg.keep_checkpoints,
                )
        except RunFailure as e:
            failure = e
        if self.env.world_size > 1 and self.backend.control([int(failure is not None)])[0]:
            rank = "" if self.env.is_main else f"rank {self.env.rank}: "
            raise RunFailure(f"{rank}checkpoint of step {step}: {failure}" if failure else "")
        if failure:
            raise RunFailure(f"checkpoint of step {step}: {failure}")
        self.saved_step = step

    # -- one step ------------------------------------------------------------------------
    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.backend.zero_grad(self.optimizer)
        if self.emu:
            self.emu.start_step()
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            logits = self.train_model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        if self.emu:
            self.emu.end_forward()
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return loss

    def _optimizer_step(self) -> torch.Tensor | None:
        """The step; the gradients' norm before clipping when `grad_clip_norm` is set."""
        if self.emu:
            self.emu.start_optimizer()
        norm = self.backend.step(self.optimizer, self.scaler)
        if self.emu:
            self.emu.end_optimizer()
        return norm

    def _probe_compute(self, x: torch.Tensor, y: torch.Tensor, step: int, steps: int) -> float:
        """Median forward+backward time with communication off (a no-op comm hook)."""
        times = []
        with self.backend.compute_only():
            for _ in range(steps):
                torch.manual_seed(step_seed(self.cfg.seed, step, self.env.rank))
                t0 = time.perf_counter()
                loss = self._forward_backward(x, y)
                loss.item()
                times.append(time.perf_counter() - t0)
        self.backend.zero_grad(self.optimizer)
        self.backend.ledger.take_step()  # nothing should be there; keep the ledger clean
        return statistics.median(times)

    def _record(
        self,
        step: int,
        loss: float,
        lr: float,
        step_s: float,
        optim_s: float,
        comm: StepComm,
        wire: int | None,
    ) -> dict[str, Any]:
        exposed = None if self.compute_s is None else step_s - (self.compute_s + optim_s)
        return step_record(
            self.cfg,
            self.env.world_size,
            step,
            loss,
            lr,
            step_s,
            exposed,
            comm,
            wire,
            self.dilation,
            self.emu.batch_size if self.emu else None,
            self.emu.late_s if self.emu else None,
        )

    def _maybe_evaluate(self, record: dict[str, Any]) -> bool:
        """Evaluate at every `eval_every` steps and at the last step, into `record`; True when
        the target accuracy is reached (the same on every rank: the result is reduced)."""
        step, cfg = record["step"], self.cfg
        due = step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)
        if not due or self.held_out is None:
            return False
        t0 = time.perf_counter()
        record.update(
            evaluate(self.model, self.held_out, self.device, self.backend.all_gather_object)
        )
        record["eval_time_s"] = time.perf_counter() - t0
        target = cfg.target_accuracy
        return target is not None and record["accuracy"] >= target

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        if env.is_main:
            print(
                f"dist-sqz: {cfg.model} ({self.params:,} params) on {env.world_size} worker(s), "
                f"backend {cfg.backend} via {env.launcher}, compression {cfg.compression}, "
                f"steps {self.start_step + 1}-{cfg.steps}, run dir {self.out}",
                flush=True,
            )
        self._open_sinks()
        first_measured = max(cfg.warmup_steps, self.start_step)
        self.last_step = self.start_step
        control = self.control
        control.install()
        try:
            for step in range(self.start_step, cfg.steps):
                t_data = time.perf_counter()
                x, y = next(self.batches)
                x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
                y = y.to(self.device, non_blocking=True)
                data_s = time.perf_counter() - t_data
                if step == self.start_step > 0 and self.backend.rebuilds_buckets:
                    self._probe_compute(x, y, step, 1)  # DDP forms its buckets as before
                if step == first_measured and cfg.compute_probe_steps:
                    self.compute_s = self._probe_compute(x, y, step, cfg.compute_probe_steps)
                torch.manual_seed(step_seed(cfg.seed, step, env.rank))
                self.compressor.set_step(step)
                lr = lr_at(cfg, step, env.world_size)
                set_lr(self.optimizer, lr)
                tx0 = self.tx() if self.tx else None
                t0 = time.perf_counter()
                loss = self._forward_backward(x, y)
                t1 = time.perf_counter()
                grad_norm = self._optimizer_step()
                loss_value = loss.item()
                t2 = time.perf_counter()
                comm = self.backend.ledger.take_step()
                done = self.last_step = step + 1
                bad = self.guard.local_bad(loss_value, grad_norm, self.scaler is not None)
                if env.is_main:
                    self.stall.loss(done, loss_value)
                # The agreement collective also drains this step's sends (TCP delivers them
                # before it), so wire_bytes counts the whole step; it adds a few packets.
                decision = control.decide(bad, self.stall.stalled)
                wire = self.tx() - tx0 if self.tx else None
                record = self._record(done, loss_value, lr, t2 - t0, t2 - t1, comm, wire)
                record["data_time_s"] = data_s  # waiting for the loader, outside step_time_s
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)  # before clipping
                if decision.nonfinite:
                    self._nonfinite(record, loss_value, grad_norm)
                else:
                    self.guard.good(done, loss_value)
                reached = self._maybe_evaluate(record)
                self._watch_stall(record)
                for sink in self.sinks:
                    sink.write(record)
                if decision.stalled and cfg.stop_when_stalled:
                    self.stopped_stalled = True
                    break
                if reached:
                    if env.is_main:
                        print(
                            f"dist-sqz: accuracy {record['accuracy']:.4f} >= "
                            f"{cfg.target_accuracy} at step {done}; stopping",
                            flush=True,
                        )
                    break
                if done == cfg.steps:
                    break
                if decision.signum:
                    self._stop(done, decision.signum)
                every = cfg.checkpoint_every
                if decision.checkpoint_due or (every and done % every == 0):
                    self._save(done)
            summary = self._finish()
            if self.stopped_stalled:
                self._fail_together(
                    f"stopped at step {self.last_step} of {cfg.steps}: the run stalled "
                    f"(--stop-when-stalled); summary and checkpoint in {self.out}"
                )
        except RuntimeError as e:
            failed = isinstance(e, self.backend.comm_errors) or self.backend.ledger.failure
            if env.world_size == 1 or not failed:
                raise
            ckpt = checkpoint.checkpoint_path(self.out)
            kept = f"; last checkpoint kept at {ckpt}" if ckpt.exists() else ""
            cause = self.backend.ledger.failure or e
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
            raise CommFailure(
                f"rank {env.rank}: a collective failed or timed out (timeout_s="
                f"{cfg.timeout_s:g}): {first}{kept}; resume with --resume {self.out}"
            ) from None
        finally:
            control.restore()
            for sink in self.sinks:
                sink.close()
            self.backend.close()
        return summary

    def _nonfinite(self, record: dict[str, Any], loss: float, grad_norm: Any) -> None:
        """A step some rank found not finite (no update was applied where the gradients
        were not): skip it, one line, or end the run, its record written first."""
        what = self.guard.what(loss, grad_norm)
        record["nonfinite"] = True
        for key in ("loss", "grad_norm"):  # metrics.jsonl stays valid JSON: null, not NaN
            if record.get(key) is not None and not math.isfinite(record[key]):
                record[key] = None
        try:
            line = self.guard.bad(record["step"], self.cfg.steps, what, self._kept())
        except Diverged as e:
            for sink in self.sinks:
                sink.write(record)
            self._fail_together(str(e), Diverged)
        if self.env.is_main:
            print(line, flush=True)

    def _fail_together(self, message: str, kind: type[RunFailure] = RunFailure) -> None:
        """End the run on every rank with rank 0's one line, printed before any rank
        leaves: a launcher kills the other workers as soon as one exits non-zero."""
        if self.env.is_main:
            print(f"dist-sqz: error: {message}", file=sys.stderr, flush=True)
        if self.env.world_size > 1:
            self.backend.control([0])
        raise kind("")

    def _watch_stall(self, record: dict[str, Any]) -> None:
        """Rank 0: feed an evaluation to the stall watch; warn once when it finds a stall."""
        if not self.env.is_main:
            return
        if record.get("accuracy") is not None:
            self.stall.accuracy(record["step"], record["accuracy"])
        if self.stall.stalled and not self.stall_warned:
            self.stall_warned = True
            record["stalled"] = True
            print(self.stall.warning(), flush=True)

    def _stop(self, step: int, signum: int) -> None:
        """Save this step's state on every rank, then end the run (no summary: it did not
        finish)."""
        self._save(step)
        name = signal.Signals(signum).name
        where = checkpoint.checkpoint_path(self.out)
        raise Stopped(
            f"stopped by {name} after step {step} of {self.cfg.steps}; checkpoint {where}; "
            f"continue with the same launcher and `dist-sqz train --resume {self.out}`"
            if self.env.is_main
            else "",
            128 + signum,
        )

    def _finish(self) -> dict[str, Any]:
        checksum = checkpoint.param_checksum(self.model)
        checksums = self.backend.all_gather_object(checksum)
        self._save(self.last_step)
        if not self.env.is_main:
            return {}
        records = read_jsonl(self.out / "metrics.jsonl")
        summary = build_summary(
            records,
            model=self.cfg.model,
            backend=self.cfg.backend,
            compression=self.cfg.compression,
            world_size=self.env.world_size,
            batch_size=self.cfg.batch_size,
            launcher=self.env.launcher,
            device=str(self.device),
            params=self.params,
            compute_time_s=None if self.compute_s is None else self.compute_s / self.dilation,
            target_accuracy=self.cfg.target_accuracy,
            **(self.emu.describe() if self.emu else {}),
        )
        summary["param_checksum"] = checksum
        summary["replicas_consistent"] = len(set(checksums)) == 1
        summary["stalled"] = self.stall.stalled
        summary["stalled_at_step"] = self.stall.stalled_at
        summary["nonfinite_steps"] = self.guard.skipped
        summary["config"] = self.cfg.to_dict()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        for sink in self.sinks:
            if hasattr(sink, "summary"):
                sink.summary(summary)
        if not self.stopped_stalled:
            print(done_line(summary, self.out / "summary.json"), flush=True)
        return summary

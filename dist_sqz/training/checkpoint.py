"""Atomic checkpoints: written to a temporary file, fsynced, then renamed over `last.pt`.

A crash mid-write leaves the previous `last.pt` intact; so does a write that fails (a full
disk), which raises `RunFailure` with one line. The file holds only tensors and
plain containers, so `torch.load(path, weights_only=True)` reads it. Before `last.pt` is
replaced, the one it replaces stays as `step<S>.pt` beside it (a hard link: no copy), the
newest `keep_checkpoints - 1` of them are kept: a run that went wrong after its last save
can go back one more.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dist_sqz.errors import RunFailure, UsageError
from dist_sqz.observe.metrics import read_jsonl

LAST = "last.pt"
IN_RANGE = 2.0  # a known good checkpoint's next loss: at most this times the run's first


def param_checksum(model: torch.nn.Module) -> str:
    """sha256 of all parameters as contiguous float32 bytes, in named_parameters() order."""
    h = hashlib.sha256()
    for _, p in model.named_parameters():
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def buffer_checksum(model: torch.nn.Module) -> str:
    """sha256 of all buffers' bytes, in buffers() order."""
    h = hashlib.sha256()
    for b in model.buffers():
        h.update(b.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def params_finite(model: torch.nn.Module) -> bool:
    """True when no parameter holds an inf or a NaN (checked before every save)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints" / LAST


def kept(run_dir: str | os.PathLike[str], by_write: bool = False) -> list[tuple[int, Path]]:
    """The earlier checkpoints kept beside last.pt, (step, path), by step (or, `by_write`,
    by when they were written: a run resumed from an older one writes its own after the
    abandoned ones, which then go first)."""
    out = []
    for p in (Path(run_dir) / "checkpoints").glob("step*.pt"):
        if p.stem[4:].isdigit():
            out.append((int(p.stem[4:]), p))
    if by_write:
        return sorted(out, key=lambda sp: (sp[1].stat().st_mtime_ns, sp[0]))
    return sorted(out)


def _keep_previous(path: Path, new_step: int | None, keep: int) -> None:
    """Keep the `last.pt` about to be replaced as step<S>.pt; leave the newest keep-1."""
    if keep > 1 and path.exists() and new_step is not None:
        try:  # reads the small pickled part only; the tensors stay on disk
            old = torch.load(path, map_location="cpu", mmap=True, weights_only=True)["step"]
        except Exception:  # an unreadable last.pt is not worth keeping
            old = new_step
        twin = path.parent / f"step{old}.pt"
        if old != new_step and not twin.exists():
            try:
                os.link(path, twin)
            except OSError:  # a filesystem without hard links: a copy
                shutil.copyfile(path, twin)
    for _, p in kept(path.parent.parent, by_write=True)[: -(keep - 1) or None]:
        p.unlink(missing_ok=True)


def save_atomic(obj: dict[str, Any], path: str | os.PathLike[str], keep: int | None = None) -> None:
    """Write `obj` to `path` atomically; for a run's last.pt, `keep` is how many
    checkpoints stay: the file it replaces is kept as step<S>.pt, the newest keep-1 of
    those."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep is not None:
            _keep_previous(path, obj.get("step"), keep)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        cause = _os_error(e)
        if cause is not None:
            # A full disk, a quota, a read-only mount: the previous file is untouched.
            kept = "the previous one is kept" if path.exists() else "there is no earlier one"
            why = cause.strerror or type(cause).__name__
            raise RunFailure(f"could not write {path} ({why}); {kept}") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _os_error(e: BaseException | None) -> OSError | None:
    """The OSError behind `e`, if any (torch.save re-raises a failed write as its own
    RuntimeError with the OSError as its context)."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def run_dir_of(where: str | os.PathLike[str]) -> Path:
    """The run directory of `--resume WHERE`: WHERE itself, or the run a checkpoint file
    (RUN_DIR/checkpoints/step<S>.pt) belongs to."""
    p = Path(where)
    return p.parent.parent if p.suffix == ".pt" else p


def resume_file(where: str | os.PathLike[str]) -> Path:
    """The checkpoint `--resume WHERE` continues from: WHERE itself when it is a checkpoint
    file, else WHERE/checkpoints/last.pt."""
    return Path(where) if Path(where).suffix == ".pt" else checkpoint_path(where)


def load(where: str | os.PathLike[str]) -> dict[str, Any]:
    """Load `RUN_DIR/checkpoints/last.pt`, or a checkpoint file of a run (an earlier one kept
    beside it); UsageError if it is missing or unreadable."""
    path = resume_file(where)
    if not path.is_file():
        raise UsageError(
            f"no checkpoint at {path}; --resume takes a run directory of an earlier run, or "
            "one of its checkpoints/step<S>.pt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which, keep it
        raise UsageError(f"checkpoint {path} cannot be read ({type(e).__name__})") from None
    for key in ("model", "optimizer", "step", "config"):
        if key not in ckpt:
            raise UsageError(f"checkpoint {path} lacks {key!r}; it was not written by dist-sqz")
    return ckpt


def default_out(cfg: Any, world_size: int) -> tuple[str, str]:
    """(run name, run directory); rank 0 calls this and tells the others."""
    name = cfg.name or f"{cfg.model}-{cfg.backend}-{cfg.compression}-n{world_size}"
    safe = re.sub(r"[^\w.-]+", "_", name)  # sqz_family:squeeze_ratio=0.25 -> a plain name
    out = cfg.out or str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}")
    return name, out


def check_new_run_dir(out: Path) -> None:
    if (out / "metrics.jsonl").exists() or checkpoint_path(out).exists():
        raise UsageError(
            f"run directory {out} already holds a run; continue it with --resume {out} "
            "or choose another --out"
        )


LAUNCH_ID = ".launch_id"


def launch_id() -> str:
    """The launcher's id of this job: torchrun's TORCHELASTIC_RUN_ID (the same across the
    restarts of one job, new for a new job); '' when not under torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID", "")


def mark_launch(run_dir: str | os.PathLike[str]) -> None:
    if launch_id():
        (Path(run_dir) / LAUNCH_ID).write_text(launch_id() + "\n")


def same_launch(run_dir: str | os.PathLike[str]) -> bool:
    """True when RUN_DIR was started by this very torchrun job: we are a restarted worker."""
    path = Path(run_dir) / LAUNCH_ID
    return bool(launch_id()) and path.is_file() and path.read_text().strip() == launch_id()


def rank_state_path(run_dir: str | os.PathLike[str], rank: int, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"compressor-rank{rank}-step{step}.pt"


def _rank_state_steps(run_dir: str | os.PathLike[str], rank: int) -> list[int]:
    prefix = f"compressor-rank{rank}-step"
    steps = []
    for p in (Path(run_dir) / "checkpoints").glob(f"{prefix}*.pt"):
        tail = p.name[len(prefix) : -len(".pt")]
        if tail.isdigit():
            steps.append(int(tail))
    return sorted(steps)


def save_rank_state(
    run_dir: str | os.PathLike[str], rank: int, step: int, state: dict, keep: int = 2
) -> None:
    """One rank's compressor state (error-feedback residuals differ per rank), atomically.

    Ranks save without waiting for each other, so a crash can leave this file a checkpoint
    ahead of last.pt: the previous one is kept too (as many as the run keeps checkpoints),
    and older ones are removed."""
    save_atomic({"step": step, "state": state}, rank_state_path(run_dir, rank, step))
    for old in _rank_state_steps(run_dir, rank)[: -max(2, keep)]:
        rank_state_path(run_dir, rank, old).unlink(missing_ok=True)


def load_rank_state(
    run_dir: str | os.PathLike[str], rank: int, step: int, required: bool
) -> dict[str, Any]:
    """This rank's compressor state saved at `step` (the step of last.pt). A compressor with
    state (`required`) must find it: resuming without it would not retrace the run."""
    if not required:
        return {}
    path = rank_state_path(run_dir, rank, step)
    if step not in _rank_state_steps(run_dir, rank):
        raise UsageError(
            f"no compressor state of rank {rank} for step {step} (last.pt's) in "
            f"{path.parent}; without it the resumed run would not be the same run: restore "
            "the file, or start the run afresh",
            rank=rank,
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(
            f"compressor state {path} cannot be read ({type(e).__name__})", rank=rank
        ) from None
    return saved["state"]


def _gave(loss: float | None, first: float) -> str:
    if loss is None or not math.isfinite(loss):
        return "a non-finite step"
    return f"loss {loss:.3g}" + (f" ({loss / first:.2g}x)" if loss > IN_RANGE * first else "")


def resume_advice(out: Path, saved_step: int | None, bad_step: int) -> str:
    """Which kept checkpoint is known good, for the line that ends a diverged run.

    A checkpoint of step S holds the weights that step S+1's forward pass used, so step
    S+1's record in metrics.jsonl judges it: known good when that step was finite (no rank
    saw a non-finite loss or gradient) and its loss at most `IN_RANGE` times the run's
    first loss (an untrained network's, about ln C). last.pt is judged first, then the
    earlier ones kept beside it, newest first; the line names the newest known good one
    with the command that resumes from it, or says that none is."""
    if saved_step is None:
        return "no checkpoint was written yet: start afresh"
    records = read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
    loss_at = {r["step"]: None if r.get("nonfinite") else r.get("loss") for r in records}
    loss_at = {s: x for s, x in loss_at.items() if s < bad_step}  # bad_step: not finite
    first = loss_at.get(min(loss_at)) if loss_at else None
    if first is None or not math.isfinite(first):
        return f"{checkpoint_path(out)} (step {saved_step}) is not known good: start afresh"
    held = [(saved_step, checkpoint_path(out))]
    held += [(s, p) for s, p in reversed(kept(out)) if s < saved_step]
    rule = f"known good: the next step finite, its loss within {IN_RANGE:g}x the first, {first:.3g}"
    judged = []
    for step, path in held:
        x = loss_at.get(step + 1)
        if x is not None and math.isfinite(x) and x <= IN_RANGE * first:
            if step == saved_step:
                good = f"{path} (step {step}) is known good (loss {x:.3g} next; {rule})"
                return f"{good}: --resume {out}"
            return (
                f"{'; '.join(judged)}; the newest known good "
                f"is {path} (step {step}, loss {x:.3g} next; {rule}): --resume {path}"
            )
        judged.append(f"{path.name} (step {step}) led to {_gave(x, first)}")
    return f"no kept checkpoint is known good ({'; '.join(judged)}; {rule}): start afresh"


class Checkpointer:
    """Every rank's state of one run at a step: last.pt (rank 0 writes it), each rank's
    compressor state beside it, earlier checkpoints kept. A write that fails on any rank (a
    full disk) stops every rank, the one that failed saying why, and the previous
    checkpoint stays."""

    def __init__(
        self, out: Path, rank: int, world_size: int, keep: int, control: Any, saved: int | None
    ) -> None:
        self.out, self.rank, self.world_size, self.keep = out, rank, world_size, keep
        self.control = control  # elementwise max over ranks: Backend.control
        self.saved_step = saved  # the step of the newest checkpoint, None before the first

    def advice(self, bad_step: int) -> str:
        """Rank 0: which kept checkpoint to resume from when the weights that would have
        given step `bad_step` are not finite (`resume_advice`); '' on the other ranks."""
        return resume_advice(self.out, self.saved_step, bad_step) if self.rank == 0 else ""

    def save(self, step: int, state: dict[str, Any] | None, rank_state: dict[str, Any]) -> None:
        """Write `state` (rank 0's: model, optimizer, step, config...; None elsewhere) and
        this rank's `rank_state` (empty: none) for `step`."""
        failure: RunFailure | None = None
        try:
            if rank_state:  # per-rank state (residuals) goes beside last.pt, one file per rank
                save_rank_state(self.out, self.rank, step, rank_state, self.keep)
            if state is not None:
                save_atomic(state, checkpoint_path(self.out), keep=self.keep)
        except RunFailure as e:
            failure = e
        if self.world_size > 1 and self.control([int(failure is not None)])[0]:
            who = "" if self.rank == 0 else f"rank {self.rank}: "
            raise RunFailure(f"{who}checkpoint of step {step}: {failure}" if failure else "")
        if failure:
            raise RunFailure(f"checkpoint of step {step}: {failure}")
        self.saved_step = step

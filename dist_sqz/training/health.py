"""Training health: steps whose loss or gradients are not finite, and networks that stall.

Non-finite steps. The backends compute the averaged gradients' norm every step and apply no
update when it is not finite (`comm/backends`); every rank holds the same averaged gradients,
so every rank skips alike. Each rank's own loss is checked too, and the per-step agreement
(`stopping.StepControl.decide`, the collective every step already has) tells every rank
whether any rank saw a bad step. At the first one the run stops on every rank with one
line (exit 1), writes no summary and no checkpoint, and says which kept checkpoint is known
good to resume from (`checkpoint.resume_advice`), or that none is; with
`skip_nonfinite_steps` K the first K such steps are skipped (no update, one line each)
before the run stops. fp16's gradient scaler keeps skipping its overflowed steps on its
own: those are not counted here.

Stalls. A network whose outputs no longer depend on its input (SqueezeNet's final ReLU
killing every class channel of a 10-way head; an lr too high for the recipe) predicts the
same distribution for every image: the loss sits at ln(classes) to within a hair, whatever
the batch, and held-out accuracy at chance. After the lr warm-up, `stall_window` steps in a
row with rank 0's loss within 0.01 of ln(C) (C = the data's classes or the model's outputs),
or three evaluations in a row at or below 1.25 / C while the training loss has not fallen
(its median over the steps before each of those evaluations down by less than 2%: a slow
learner on a hard dataset sat at chance for three evaluations while its loss fell, then
rose to 0.34), make one warning line naming the likely cause and a fix the run does not
already use; `stalled` goes into summary.json and W&B, and `stop_when_stalled` ends the run
there (exit 1). A run that recovers (held-out accuracy above chance, or the loss off ln(C)
for `stall_window` steps) has the stall cleared, with when and why.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from dist_sqz.errors import RunFailure

STALL_LOSS_TOL = 0.01
STALL_EVALS = 3
CHANCE_MARGIN = 1.25
LEARNING_MARGIN = 0.02  # a training loss down this share over the evaluations is learning


class Diverged(RunFailure):
    """The loss or the gradients stopped being finite: exit 1, nothing saved over the last
    good checkpoint."""


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


class NonFiniteGuard:
    """Counts bad steps; decides, from the agreed flag, whether a bad step is skipped or
    ends the run."""

    def __init__(self, allowed: int, is_main: bool, world_size: int, lr: float) -> None:
        self.allowed, self.is_main, self.lr = allowed, is_main, lr
        self.world_size = world_size
        self.skipped: list[int] = []
        self.last_finite: tuple[int, float] | None = None  # (step, loss)

    @staticmethod
    def local_bad(loss: float, grad_norm: Any, scaled: bool) -> bool:
        """This rank's view: its loss, or (without fp16's scaler, which handles overflow
        itself) the averaged gradients' norm, is not finite."""
        if not math.isfinite(loss):
            return True
        return not scaled and grad_norm is not None and not math.isfinite(float(grad_norm))

    def what(self, loss: float, grad_norm: Any) -> str:
        norm = "" if grad_norm is None else f", gradients' norm {_fmt(float(grad_norm))}"
        if self.world_size == 1:
            return f"loss {_fmt(loss)}{norm}"
        return f"a loss or gradient not finite on some rank (rank 0: loss {_fmt(loss)}{norm})"

    def good(self, step: int, loss: float) -> None:
        self.last_finite = (step, loss)

    def bad(self, step: int, total: int, what: str, checkpoint: str) -> str:
        """A bad step every rank agreed on: the line to log when it is skipped; raises
        `Diverged` when no more may be skipped."""
        last = (
            f"the last finite loss was {_fmt(self.last_finite[1])} at step {self.last_finite[0]}"
            if self.last_finite
            else "no step had a finite loss"
        )
        if len(self.skipped) < self.allowed:
            self.skipped.append(step)
            return (
                f"dist-sqz: warning: step {step}: {what}; skipped without an "
                f"update ({len(self.skipped)} of {self.allowed} allowed; {last})"
            )
        skipped = f" after skipping {len(self.skipped)}" if self.skipped else ""
        raise Diverged(
            f"training diverged at step {step} of {total}: {what}{skipped} ({last}); stopped "
            f"every rank without saving; {checkpoint}, with a lower --lr (now {self.lr:g}) "
            "or --grad-clip-norm"
            if self.is_main
            else ""
        )


class StallWatch:
    """Rank 0's watch for a network that has stopped learning (see the module docstring)."""

    def __init__(
        self,
        window: int,
        after_step: int,
        data_classes: int | None,
        num_classes: int,
        model: str,
        lr: float,
        data: str = "",
        on_recipe: bool = False,
    ) -> None:
        self.window, self.after_step, self.model, self.lr = window, after_step, model, lr
        self.recipe = f"{data.partition(':')[0]}_{model}"
        self.on_recipe = on_recipe  # the run already uses that recipe: never advise it
        self.num_classes = num_classes
        classes = {num_classes} | ({data_classes} if data_classes else set())
        self.levels = sorted(math.log(c) for c in classes if c > 1)
        self.chance = CHANCE_MARGIN / (data_classes or num_classes)
        self.on = bool(window) and data_classes is not None  # synthetic data cannot stall
        self.run_since: int | None = None  # first step of the current run at ln(C)
        self.off_since: int | None = None  # first step of the current run off ln(C)
        self.since_eval: list[float] = []  # training losses since the last evaluation
        self.chance_evals: list[tuple[float, float]] = []  # (accuracy, median loss before)
        self.stalled_at: int | None = None
        self.cleared: tuple[int, str] | None = None  # (step, why) of a stall that recovered
        self.why = ""
        self.by_accuracy = False

    @property
    def stalled(self) -> bool:
        return self.stalled_at is not None

    def _at_chance(self, loss: float) -> bool:
        return math.isfinite(loss) and any(abs(loss - lv) <= STALL_LOSS_TOL for lv in self.levels)

    def _clear(self, step: int, why: str) -> None:
        self.cleared = (step, why)
        self.stalled_at, self.by_accuracy, self.why = None, False, ""
        self.chance_evals, self.run_since = [], None

    def loss(self, step: int, loss: float) -> None:
        if not self.on or step <= self.after_step:
            return
        self.since_eval.append(loss)
        at_chance = self._at_chance(loss)
        if self.stalled:
            self.off_since = None if at_chance else (self.off_since or step)
            if not self.by_accuracy and self.off_since and step - self.off_since + 1 >= self.window:
                self._clear(
                    step, f"the loss ({loss:.4f}) has left ln(classes) since step {self.off_since}"
                )
            return
        if at_chance:
            self.run_since = self.run_since or step
            if step - self.run_since + 1 >= self.window:
                self.stalled_at = step
                self.why = (
                    f"loss {loss:.4f} has stayed at ln(classes), chance, for the "
                    f"{self.window} steps since step {self.run_since}"
                )
        else:
            self.run_since = None

    def accuracy(self, step: int, accuracy: float) -> None:
        if not self.on or step <= self.after_step:
            return
        before = [x for x in self.since_eval if math.isfinite(x)]
        self.since_eval = []
        if accuracy > self.chance:
            self.chance_evals = []
            if self.stalled:
                self._clear(step, f"held-out accuracy {accuracy:.3f} is above chance")
            return
        if self.stalled:
            return
        self.chance_evals.append((accuracy, statistics.median(before) if before else math.nan))
        if len(self.chance_evals) < STALL_EVALS:
            return
        first, last = self.chance_evals[-STALL_EVALS][1], self.chance_evals[-1][1]
        if last < first * (1 - LEARNING_MARGIN):  # at chance, but its loss is falling
            return
        self.stalled_at, self.by_accuracy = step, True
        evals = self.chance_evals[-STALL_EVALS:]
        accs = ", ".join(f"{a:.3f}" for a, _ in evals)
        self.why = (
            f"held-out accuracy has been at chance at {STALL_EVALS} evaluations in a row "
            f"({accs}) while the training loss did not fall ({first:.4f} -> {last:.4f})"
        )

    def warning(self) -> str:
        """The one line that says the run stalled, why it likely did, and what to do (never
        what the run already does)."""
        from dist_sqz.training.recipes import available

        if self.on_recipe:
            recipe = "a different --seed (the run already uses the recipe)"
        elif self.recipe in available():
            recipe = f"the recipe (--config configs/{self.recipe}.yaml)"
        else:
            recipe = "a recipe (configs/)"
        dead_head = self.model.startswith("squeezenet") and self.num_classes < 1000
        if self.by_accuracy and not dead_head:
            fix = (
                "nothing it learned carries to the held-out split: check that the labels "
                f"match the images, lower --lr (now {self.lr:g}), or start from {recipe}"
            )
        elif dead_head:
            fix = (
                f"SqueezeNet's final ReLU has likely killed the class channels of its "
                f"{self.num_classes}-way head: train with {recipe}, or --num-classes 1000 and "
                f"a lower --lr (now {self.lr:g})"
            )
        else:
            fix = (
                f"the network predicts the same for every input: lower --lr (now "
                f"{self.lr:g}), or start from {recipe}"
            )
        at = self.stalled_at
        return f"dist-sqz: warning: training has stalled at step {at}: {self.why}; {fix}"

    def cleared_line(self) -> str:
        step, why = self.cleared or (0, "")
        return f"dist-sqz: note: the stall is cleared at step {step}: {why}"

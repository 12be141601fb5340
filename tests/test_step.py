"""The training step's arithmetic, called in this process (world size 1, gloo), with no
launcher: what `Trainer.run` times, accounts and controls around it."""

from __future__ import annotations

import torch

from dist_sqz.config import TrainConfig
from dist_sqz.training.trainer import Trainer


def test_train_step_in_one_process(tmp_path):
    cfg = TrainConfig(
        model="squeezenet1_1",
        data="digits",
        image_size=32,
        batch_size=8,
        steps=5,
        lr=0.01,
        grad_clip_norm=0.5,
        out=str(tmp_path / "run"),
    )
    trainer = Trainer(cfg)
    try:
        x, y = next(trainer.batches)
        before = [p.detach().clone() for p in trainer.model.parameters()]
        result = trainer.train_step(x, y)
        # the loss of the weights before the update, and the averaged (here: this rank's)
        # gradients' norm before clipping, as the clip computed it
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        clipped = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        assert result.grad_norm is not None and float(result.grad_norm) > 0.5
        assert abs(float(clipped) - 0.5) < 1e-3  # clipped to grad_clip_norm
        assert 2.0 < result.loss < 2.6  # ~ln(10) at the start
        moved = [
            not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True)
        ]
        assert all(moved)
        assert result.step_s >= result.optimizer_s > 0
        comm = trainer.backend.ledger.take_step()
        assert comm.payload_bytes == 4 * trainer.params  # the whole fp32 gradient, once
        # a non-finite gradient applies no update
        with torch.no_grad():
            x_bad = x.clone()
            x_bad[0, 0, 0, 0] = float("nan")
        snapshot = [p.detach().clone() for p in trainer.model.parameters()]
        bad = trainer.train_step(x_bad, y)
        assert not torch.isfinite(bad.grad_norm)
        assert all(
            torch.equal(a, p) for a, p in zip(snapshot, trainer.model.parameters(), strict=True)
        )
    finally:
        trainer.backend.close()
    assert not (tmp_path / "run").exists()  # nothing written before run()

"""Compressors over real gloo collectives: exact maths on known gradients (2 spawned ranks),
then whole training runs under torchrun (payload accounting, identical replicas, resume)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.collectives import TorchCollectives
from dist_sqz.comm.compression import Bucket, build_compressor, sparse
from dist_sqz.comm.compression.base import ParamState
from dist_sqz.config import TrainConfig
from tests.helpers import compressors, free_port, read_run, train_torchrun

SHAPES = [torch.Size([6, 5]), torch.Size([6]), torch.Size([4, 3, 2, 2]), torch.Size([700])]
NAMES = ["fc.weight", "fc.bias", "conv.weight", "big.bias"]


def _grad(rank: int, low_rank: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rank)
    parts = []
    for s in SHAPES:
        if low_rank and len(s) >= 2:  # rank-1 matrices: PowerSGD (rank 2) recovers them exactly
            n, m = s[0], math.prod(s[1:])
            parts.append((torch.randn(n, 1, generator=g) @ torch.randn(1, m, generator=g)).view(-1))
        else:
            parts.append(torch.randn(math.prod(s), generator=g))
    return torch.cat(parts)


def _exchanges(rank: int, port: int, jobs, q) -> None:
    """One rank of the pool: joins a 2-rank gloo group once, then runs each job it is given
    (compressor name, options, steps, low-rank gradients) until it is given None."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    while (job := jobs.get()) is not None:
        q.put((rank, _exchange_on_this_rank(rank, *job)))
    dist.destroy_process_group()


def _exchange_on_this_rank(rank: int, name: str, opts: dict, steps: int, low_rank: bool):
    ledger = Ledger(2)
    comm = TorchCollectives(ledger, 2)
    cfg = TrainConfig(momentum=0.0, **opts)
    comp = build_compressor(name, cfg)
    outs = []
    for step in range(steps):
        comp.set_step(step)
        buf = _grad(rank, low_rank) * (step + 1)
        out = comp.exchange(Bucket(buf, 0, SHAPES, NAMES), comm).wait()
        outs.append(out.clone())
    held = comp.state_dict().get("residual", {})
    residual = torch.cat([held[n].reshape(-1) for n in NAMES]) if held else None
    # numpy arrays travel by value: tensors would be shared through this process's file
    # descriptors, which vanish when it exits before the parent has read them.
    arrays = [o.numpy() for o in outs]
    held_np = None if residual is None else residual.numpy()
    step = ledger.take_step()
    counts = (step.payload_bytes, step.sent_bytes, step.collectives, comp.take_compute_s())
    return arrays, counts, held_np


class ExchangePool:
    """Two spawned gloo ranks, started once for the module, that run exchanges of known
    gradients on request; each distinct exchange is run once and its result kept."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.q, self.jobs = ctx.Queue(), [ctx.Queue() for _ in range(2)]
        port = free_port()
        self.procs = [
            ctx.Process(target=_exchanges, args=(r, port, self.jobs[r], self.q)) for r in range(2)
        ]
        for p in self.procs:
            p.start()
        self.done: dict[tuple, dict] = {}

    def __call__(self, name: str, steps: int = 1, low_rank: bool = False, **opts):
        """Run `steps` exchanges on both ranks; per rank (outputs, payload, held residual,
        (payload, sent, collectives, compute seconds))."""
        key = (name, steps, low_rank, tuple(sorted(opts.items())))
        if key not in self.done:
            for jobs in self.jobs:
                jobs.put((name, opts, steps, low_rank))
            got = {}
            for _ in self.procs:
                r, (outs, counts, res) = self.q.get(timeout=120)
                held = None if res is None else torch.from_numpy(res)
                got[r] = ([torch.from_numpy(o) for o in outs], counts[0], held, counts)
            self.done[key] = got
        return self.done[key]

    def close(self) -> None:
        for jobs in self.jobs:
            jobs.put(None)
        for p in self.procs:
            p.join(timeout=30)
        for p in self.procs:  # a rank left waiting on a peer that failed
            if p.exitcode is None:
                p.kill()
        assert [p.exitcode for p in self.procs] == [0, 0]


@pytest.fixture(scope="module")
def exchange():
    pool = ExchangePool()
    yield pool
    pool.close()


def _mean(step: int = 0, low_rank: bool = False) -> torch.Tensor:
    return (_grad(0, low_rank) + _grad(1, low_rank)) * (step + 1) / 2


NUMEL = sum(math.prod(s) for s in SHAPES)


@pytest.mark.integration
def test_fp16_and_bf16_average_and_halve_payload(exchange):
    for name, tol in (("fp16", 2e-3), ("bf16", 2e-2)):
        got = exchange(name)
        for r in (0, 1):
            out, payload = got[r][0][0], got[r][1]
            assert payload == 2 * NUMEL
            torch.testing.assert_close(out, _mean(), rtol=tol, atol=tol)
        assert torch.equal(got[0][0][0], got[1][0][0])


@pytest.mark.integration
def test_int8_payload_and_error(exchange):
    got = exchange("int8")
    chunks = math.ceil(NUMEL / 1024)
    assert got[0][1] == NUMEL + 4 * chunks
    out = got[0][0][0]
    assert torch.equal(out, got[1][0][0])
    # Each value is off by at most half a quantisation step of its rank's chunk.
    bound = sum(_grad(r).abs().max() / 127 / 2 for r in (0, 1)) / 2
    assert (out - _mean()).abs().max() <= bound + 1e-6


def test_int8_decodes_payloads_at_odd_offsets():
    """All-gathered payloads sit back to back: with an odd value count the second starts at
    an odd byte, and its fp32 scales must still be read."""
    comp = build_compressor("int8", TrainConfig())
    grads = [torch.randn(783, generator=torch.Generator().manual_seed(r)) for r in (0, 1)]
    payloads = [comp.encode(Bucket(g, 0, [torch.Size([783])], ["w"])) for g in grads]
    gathered = torch.cat(payloads)
    half = len(payloads[0])
    assert half % 4 != 0
    out = torch.zeros(783)
    comp.decode_sum([gathered[:half], gathered[half:]], out)
    bound = sum(g.abs().max() / 127 / 2 for g in grads)
    assert (out - sum(grads)).abs().max() <= bound + 1e-6


@pytest.mark.integration
def test_topk_full_density_is_exact_and_error_feedback_keeps_the_rest(exchange):
    got = exchange("topk", compression_density=1.0)
    torch.testing.assert_close(got[0][0][0], _mean())
    assert got[0][1] == 8 * NUMEL  # values + int32 indices

    density = 0.1
    k = math.ceil(density * NUMEL)
    got = exchange("topk", steps=2, compression_density=density)
    first, second = got[0][0]
    assert torch.equal(first, got[1][0][0]) and torch.equal(second, got[1][0][1])
    assert got[0][1] == 2 * 8 * k
    assert int((first != 0).sum()) <= 2 * k
    top = torch.topk(_grad(0).abs(), k).indices
    assert torch.all(first[top] != 0)
    # Error feedback loses nothing: what was averaged over both steps plus the mean of what
    # the ranks still hold equals the mean of every gradient so far.
    held = (got[0][2] + got[1][2]) / 2
    torch.testing.assert_close(first + second + held, _mean(0) + _mean(1))


@pytest.mark.parametrize("kind", ["normal", "heavy", "mostly_zero", "sample_misleads"])
def test_sampled_topk_picks_the_set_torch_topk_picks(kind):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1_000_003, generator=gen)
    if kind == "heavy":
        x = x**5
    elif kind == "mostly_zero":
        x[torch.rand(x.numel(), generator=gen) < 0.9] = 0
    elif kind == "sample_misleads":  # every sampled entry is huge: the shortcut must not hold
        x[:: sparse.SAMPLE_STRIDE] = 1e6 + torch.arange(len(x[:: sparse.SAMPLE_STRIDE]))
    mags = x.abs()
    for k in (1, 1000, 3001, 20_000, 100_000):
        idx = sparse.topk_indices(mags, k)
        assert idx.numel() == k and idx.unique().numel() == k
        assert set(idx.tolist()) == set(torch.topk(mags, k).indices.tolist())


def test_param_state_follows_rebucketing_and_loads():
    state = ParamState()
    first = Bucket(torch.zeros(6), 0, [torch.Size([2, 2]), torch.Size([2])], ["w", "b"])
    flat = state.flat(first).add_(torch.arange(6.0))
    state.store(first, flat)
    assert state.flat(first) is flat  # kept, not copied
    # Re-bucketed (as DDP does after step 1): the state follows the names.
    alone = Bucket(torch.zeros(2), 0, [torch.Size([2])], ["b"])
    assert state.flat(alone).tolist() == [4.0, 5.0]
    state.store(alone, state.flat(alone).mul_(10))
    assert state.flat(first).tolist() == [0.0, 1.0, 2.0, 3.0, 40.0, 50.0]
    saved = state.state_dict()
    state.load_state_dict({k: v * 0 for k, v in saved.items()})
    assert state.flat(alone).tolist() == [0.0, 0.0]


def test_dgc_warmup_density_schedule():
    cfg = TrainConfig(momentum=0.9, compression_density=0.001, dgc_warmup_steps=8)
    comp = build_compressor("dgc", cfg)
    seen = []
    for step in range(10):
        comp.set_step(step)
        seen.append(comp.current_density())
    assert seen[:2] == [0.25, 0.25] and seen[2] == 0.0625 and seen[-1] == 0.001
    assert seen == sorted(seen, reverse=True)


def test_dgc_moves_global_clipping_before_accumulation():
    """DGC exchanges momentum: a grad_clip_norm becomes its local, pre-accumulation clip."""
    moved = TrainConfig(compression="dgc", grad_clip_norm=3.0)
    assert (moved.dgc_clip_norm, moved.grad_clip_norm) == (3.0, None)
    assert TrainConfig(**moved.model_dump()) == moved  # a resume reads the same config back
    both = TrainConfig(compression="dgc", grad_clip_norm=3.0, dgc_clip_norm=1.0)
    assert (both.dgc_clip_norm, both.grad_clip_norm) == (1.0, None)
    kept = TrainConfig(compression="topk", grad_clip_norm=3.0)
    assert (kept.dgc_clip_norm, kept.grad_clip_norm) == (0.0, 3.0)
    # The clip binds: a rank's bucket of norm 10 goes out as (at most) 3 / sqrt(2).
    comp = build_compressor("dgc", moved)
    comp.world_size = 2
    grad = torch.full((100,), 1.0)  # norm 10
    sent = comp.encode(Bucket(grad, 0, [torch.Size([100])], ["w"]))
    values = sent[: sent.numel() // 2].view(torch.float32)
    torch.testing.assert_close(values, torch.full_like(values, 0.3 / math.sqrt(2)))


@pytest.mark.parametrize("nesterov", [False, True])
def test_dgc_at_full_density_is_the_optimizers_momentum_unless_masked(nesterov):
    """Sending everything, unmasked DGC sends what torch's (Nesterov) SGD would step by; with
    momentum factor masking an entry sent every step keeps no momentum: g, or (1 + m) g."""
    m = 0.9
    sent = {}
    for masking in (False, True):
        cfg = TrainConfig(
            momentum=m, nesterov=nesterov, compression_density=1.0, dgc_momentum_masking=masking
        )
        comp = build_compressor("dgc", cfg)
        outs = []
        for step in range(4):
            comp.set_step(step)
            out = torch.zeros(NUMEL)
            sparse.add_sparse([comp.encode(Bucket(_grad(step), 0, SHAPES, NAMES))], out)
            outs.append(out)
        sent[masking] = outs
    buf = torch.zeros(NUMEL)
    for step in range(4):
        g = _grad(step)
        buf = m * buf + g
        torch.testing.assert_close(sent[False][step], g + m * buf if nesterov else buf)
        torch.testing.assert_close(sent[True][step], (1 + m) * g if nesterov else g)


@pytest.mark.integration
def test_dgc_replicas_agree_and_momentum_masks(exchange):
    got = exchange("dgc", steps=3, compression_density=0.05, dgc_clip_norm=1.0)
    for a, b in zip(got[0][0], got[1][0], strict=True):
        assert torch.equal(a, b)
        assert int((a != 0).sum()) <= 2 * math.ceil(0.05 * NUMEL)


@pytest.mark.integration
def test_powersgd_recovers_low_rank_gradients_and_shrinks_payload(exchange):
    got = exchange("powersgd", steps=2, low_rank=True, powersgd_rank=2)
    for step in (0, 1):
        out = got[0][0][step]
        assert torch.equal(out, got[1][0][step])
    # The average of two rank-1 matrices is rank 2: recovered once Q has warmed up.
    torch.testing.assert_close(got[0][0][1], _mean(1, low_rank=True), rtol=1e-4, atol=1e-4)
    # fc.weight (6x5) and conv.weight (4x12) go as rank-2 P and Q: 2(n+m) < nm for both;
    # the biases go whole.
    p_q = 2 * (6 + 5) + 2 * (4 + 12)
    assert got[0][1] == 2 * 4 * (p_q + 6 + 700)


@pytest.mark.integration
@pytest.mark.parametrize("variant", compressors(but=()))
def test_plans_are_what_the_exchange_sends(exchange, variant):
    """The cost model prices a compressor by its `plan`: the collectives, payload and bytes
    sent that the accounted exchange really issues, on 2 gloo ranks."""
    from dist_sqz.comm.accounting import sent_bytes
    from dist_sqz.config.variants import parse_variant

    v = parse_variant(variant)
    got = exchange(v.name, **{k: x for k, x in v.train_settings().items() if k != "compression"})
    plan = v.build().plan(SHAPES)
    payload, sent, collectives, compute_s = got[0][3]
    assert payload == sum(b for _, b in plan)
    assert sent == sum(sent_bytes(kind, b, 2) for kind, b in plan)
    assert collectives == len(plan)
    # Encoding and decoding are counted as the compressor's compute; none has nothing.
    assert (compute_s == 0) == (v.name == "none")


# -- whole runs --------------------------------------------------------------------------

ALEX = ["--model", "alexnet", "--image-size", "64", "--batch-size", "2"]
QUICK = ["--steps", "3", "--warmup-steps", "1", "--compute-probe-steps", "0"]
ALEX_PAYLOAD = 244_403_360


@pytest.mark.integration
def test_alexnet_topk_fp16_powersgd_payloads(tmp_path):
    train_torchrun(
        2,
        tmp_path / "topk",
        *ALEX,
        *QUICK,
        "--compression",
        "topk",
        "--compression-density",
        "0.001",
    )
    _, s = read_run(tmp_path / "topk")
    assert s["compression_ratio"] >= 250 and s["replicas_consistent"]

    train_torchrun(2, tmp_path / "fp16", *ALEX, *QUICK, "--compression", "fp16")
    metrics, s = read_run(tmp_path / "fp16")
    assert all(m["payload_bytes"] * 2 == ALEX_PAYLOAD for m in metrics)
    assert s["replicas_consistent"]

    train_torchrun(2, tmp_path / "psgd", *ALEX, *QUICK, "--compression", "powersgd")
    metrics, s = read_run(tmp_path / "psgd")
    assert all(m["payload_bytes"] < ALEX_PAYLOAD / 100 for m in metrics)
    # PowerSGD's matrix products over 61 M values: compute of its own, beside comm_time_s.
    assert all(m["compress_time_s"] > 0 for m in metrics) and s["compress_time_s"] > 0
    assert s["replicas_consistent"]


@pytest.mark.integration
@pytest.mark.parametrize("name", compressors())
def test_replicas_consistent_under_compression(shared_run, tiny, name):
    _, s = read_run(shared_run(3, *tiny, "--compression", name))
    assert s["replicas_consistent"] and s["compression_ratio"] > 1.5


def test_rank_state_keeps_two_generations(tmp_path):
    from dist_sqz.errors import UsageError
    from dist_sqz.training import checkpoint

    for step in (2, 4, 6):
        checkpoint.save_rank_state(tmp_path, 1, step, {"r": torch.full((3,), float(step))})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "compressor-rank1-step4.pt",
        "compressor-rank1-step6.pt",
    ]
    # last.pt may lag one checkpoint behind this rank's state: the older one is still there.
    assert checkpoint.load_rank_state(tmp_path, 1, 4, required=True)["r"][0] == 4
    with pytest.raises(UsageError, match="start the run afresh"):
        checkpoint.load_rank_state(tmp_path, 1, 2, required=True)
    with pytest.raises(UsageError, match="no compressor state of rank 0"):
        checkpoint.load_rank_state(tmp_path, 0, 4, required=True)
    assert checkpoint.load_rank_state(tmp_path, 0, 4, required=False) == {}

"""Encoding under emulated compute: a compressor's encoding and decoding are padded to D x
their CPU time and hold the rest of the backward up as long (local compute mode)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.collectives import TorchCollectives
from dist_sqz.comm.compression import Bucket, build_compressor
from dist_sqz.compute.emulate import EmulatedCompute
from dist_sqz.compute.modes import ComputeMode, crowded_hosts, measure_local_encoding
from dist_sqz.config import TrainConfig
from dist_sqz.models import build_model


def _burn(seconds: float) -> None:
    """Spend about `seconds` of this thread's CPU time."""
    end = time.thread_time() + seconds
    x = torch.ones(64, 64)
    while time.thread_time() < end:
        x = (x @ x).clamp_(max=1.0)


@pytest.fixture
def emu(tmp_path):
    times = {"forward_s": 0.001, "backward_s": 0.002, "optimizer_s": 0.001}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"models": {"squeezenet1_1": {"fp32": {"8": times}}}}))
    model = build_model("squeezenet1_1", 10)
    return model, EmulatedCompute(model, str(path), "squeezenet1_1", 8, "fp32", 3.0, 10)


def test_encoding_is_padded_to_d_times_its_cpu_time_and_holds_the_backward_up(emu):
    model, emu = emu
    comp = build_compressor("topk", TrainConfig(compression="topk").to_dict())
    comp.pace = emu.spend
    emu.start_step()
    emu.end_forward()
    t0 = time.perf_counter()
    c0 = time.thread_time()
    comp.timed(_burn, 0.02)
    cpu = time.thread_time() - c0
    wall = time.perf_counter() - t0
    assert wall >= 3.0 * 0.02  # padded: D x at least the CPU time burnt
    counted = comp.take_compute_s()
    assert 3.0 * 0.02 <= counted <= wall  # compress_time_s x D: the padded wall, inside ours
    assert 3.0 * 0.02 <= emu._shift <= 3.0 * cpu + 1e-9
    # The last gradient of the backward is now due D x the encoding later.
    last = max(emu._share.values())
    due = emu._backward_start + emu._shift + last * emu.backward_s
    assert due > emu._backward_start + last * emu.backward_s + 0.05
    emu.hold(0.5)  # a collective waited for inside the hook moves the rest as much
    assert emu._backward_start + emu._shift + last * emu.backward_s == pytest.approx(due + 0.5)
    emu.start_step()
    assert emu._shift == 0.0  # each step's encoding moves that step's backward only


def test_a_compressor_without_encoding_is_never_paced(emu):
    _, emu = emu
    comp = build_compressor("none", TrainConfig().to_dict())
    calls = []
    comp.pace = lambda cpu, started: calls.append(cpu) or 0.0
    comp.timed(_burn, 0.001)
    assert calls == [] and comp.take_compute_s() == 0.0


def test_powersgd_paces_both_sides_of_its_first_all_reduce_and_its_decoding():
    cfg = TrainConfig(compression="powersgd", powersgd_rank=1, powersgd_start_step=0)
    comp = build_compressor("powersgd", cfg.to_dict())
    comp.set_step(5)
    pieces: list[float] = []

    def pace(cpu: float, started: float) -> float:
        pieces.append(cpu)
        return 0.25

    comp.pace = pace
    waits: list[float] = []
    comp.held = waits.append
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        grad = torch.randn(40 * 30 + 30)
        bucket = Bucket(grad, 0, [torch.Size([40, 30]), torch.Size([30])], ["w", "b"])
        comp.exchange(bucket, TorchCollectives(Ledger(1), 1)).wait()
    finally:
        dist.destroy_process_group()
    assert len(pieces) == 3  # P = M Q; orthogonalise + Q = M^T P; decode P Q^T
    # P's all-reduce is waited for inside the hook: the backward is held up, not late
    assert len(waits) == 1 and waits[0] >= 0
    assert comp.take_compute_s() == pytest.approx(0.75)


def test_local_mode_pads_encoding_a_gpu_profile_does_not():
    assert ComputeMode("local", "p.json").train_settings(4)["pad_encoding"] is True
    assert ComputeMode("profile", "h100", dilation=100).train_settings(4)["pad_encoding"] is False
    assert ComputeMode("real").train_settings(4) == {}


def test_a_gpu_profile_chooses_its_dilation_and_doubles_it_unless_given():
    from dist_sqz.compare.plan import compute_mode
    from dist_sqz.compute.modes import PROFILE_DILATION
    from dist_sqz.config import CompareConfig

    chosen = compute_mode(CompareConfig(compute_profile="h100"), Path("p.json"))
    assert chosen.adaptive and chosen.dilation_for(4) == PROFILE_DILATION
    assert "doubled for a row" in chosen.describe()
    given = compute_mode(CompareConfig(compute_profile="h100", dilation=50), Path("p.json"))
    assert not given.adaptive and given.dilation_for(4) == 50
    assert "doubled" not in given.describe()


def test_d_holds_the_real_work_the_trial_measured(monkeypatch):
    """Chosen before a row: max(1.5, 1.15 x the D the trial needed) x max(1, N / cores),
    rounded up to two figures; a GPU profile's D only grows past 100 when the real work
    needs it; a given D is kept whatever the trial says."""
    from dist_sqz.compute import modes

    monkeypatch.setattr(modes, "cores", lambda: 2)
    local = ComputeMode("local", "p.json")
    assert [local.dilation_for(n) for n in (1, 2, 4, 8)] == [1.5, 1.5, 3.0, 6.0]
    assert local.dilation_for(1, 1.73) == 2.0  # 1.9895, up
    assert local.dilation_for(4, 4.3) == 9.9  # 4.945 x 2 = 9.89, up
    assert local.dilation_for(2, 0.8) == 1.5  # a trial that fits at D < 1.3: no less room
    gpu = ComputeMode("profile", "h100")
    assert gpu.dilation_for(4, 30.0) == 100 and gpu.dilation_for(4, 48.0) == 120
    assert ComputeMode("local", "p.json", dilation=2.5).dilation_for(4, 3.0) == 2.5


def test_the_need_counts_a_gradient_late_for_its_own_due_time(tmp_path):
    """The schedule a trial reads: each pad's real time and due time, so that the D at which
    every pad would have been on time (gradients included) is known; a backward held up by
    a slow early layer needs more than its whole fits."""
    from dist_sqz.compare.trial import need_for

    times = {"forward_s": 0.001, "backward_s": 0.010, "optimizer_s": 0.001}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"models": {"squeezenet1_1": {"fp32": {"8": times}}}}))
    model = build_model("squeezenet1_1", 10)
    emu = EmulatedCompute(model, str(path), "squeezenet1_1", 8, "fp32", 1.0, 10)
    emu.start_step()
    time.sleep(0.004)  # a forward 4x its padded 1 ms
    emu.end_forward()
    need = need_for([emu.schedule], 0.0)
    assert need == pytest.approx(4.0, rel=0.5) and need >= 4.0
    emu.start_optimizer()
    emu.end_optimizer()  # on time: the need stays
    assert need_for([emu.schedule], 0.0) >= 4.0
    emu.start_step()
    assert emu.schedule == [] and len(emu.recent) == 1  # the step kept, a new one begun


def test_each_row_needs_what_keeps_its_gradients_within_its_step(tmp_path, monkeypatch):
    """From the trial's pads at D = 1 (real time to each, its due time): the D at which none
    is late by more than 1% of the row's predicted step. AlexNet's first gradient (real 155
    ms, due 95 ms) binds its 1-worker row (256 ms steps) more than its 2-worker row (2.2 s
    steps); a row the cost model has no step for may have no pad late at all. An
    overhead.json of an older comparison (a number per model) reads back as its overhead."""
    from dist_sqz.compare import run
    from dist_sqz.compare.trial import need_for, needs, trials
    from dist_sqz.config import CompareConfig

    pads = [[0.155, 0.0946], [0.3, 0.25]]
    one = 0.155 / (0.0946 + 0.01 * 0.256)
    assert need_for([pads], 0.256) == pytest.approx(one)
    assert need_for([pads, [[0.2, 0.0946]], [[0.1, 0.1]]], 0.256) == pytest.approx(one)
    assert need_for(None, 1.0) is None
    monkeypatch.setattr(run, "namespaces_permitted", lambda: (False, "a unit test"))
    cfg = CompareConfig(models=["alexnet"], compression=["none", "topk"], workers=[1, 2])
    comp = run.Comparison(cfg, tmp_path / "cmp", resume=False)
    known = {"alexnet": {"overhead_s": 5.0, "schedule": [pads]}}
    got = needs(comp, known, {("alexnet", 1): 0.256, ("alexnet", 2): 2.2})
    assert got["alexnet", 1] == pytest.approx(one)
    assert got["alexnet", 2] == pytest.approx(0.155 / (0.0946 + 0.022))
    assert got["alexnet+topk", 1] == got["alexnet+topk", 2] == pytest.approx(0.155 / 0.0946)
    kept = tmp_path / "overhead.json"
    kept.write_text(json.dumps({"alexnet": 7.5}))
    todo = [(a, n) for a in ("alexnet", "alexnet+topk") for n in (1, 2)]
    old = {"alexnet": {"overhead_s": 7.5, "schedule": None}}
    assert trials(comp, todo, kept) == old


def test_the_local_profile_gains_the_encoding_it_lacks_and_keeps_what_it_has(tmp_path):
    path = tmp_path / "profile.json"
    entry = {"forward_s": 0.01, "backward_s": 0.02, "optimizer_s": 0.001}
    path.write_text(json.dumps({"models": {"squeezenet1_1": {"fp32": {"8": entry}}}}))
    lines: list[str] = []
    arms = [("squeezenet1_1", "none"), ("squeezenet1_1", "topk:density=0.01")]
    measure_local_encoding(arms, path, progress=lines.append)
    prof = json.loads(path.read_text())
    got = prof["models"]["squeezenet1_1"]["fp32"]["8"]["compress_s"]
    assert set(got) == {"topk:density=0.01"} and got["topk:density=0.01"] > 0
    assert len(lines) == 1 and "topk:density=0.01" in lines[0]
    got["topk:density=0.01"] = 123.0  # a resumed comparison keeps what it padded to
    path.write_text(json.dumps(prof))
    measure_local_encoding(arms, path, progress=lines.append)
    again = json.loads(path.read_text())["models"]["squeezenet1_1"]["fp32"]["8"]["compress_s"]
    assert again == {"topk:density=0.01": 123.0} and len(lines) == 1


def test_the_report_says_when_emulated_hosts_crowd_the_cores():
    local = {"kind": "local", "dilation": None, "cores": 2}
    assert crowded_hosts(local, 4) == ""  # two hosts a core: room enough
    assert "8 hosts on 2 cores" in crowded_hosts(local, 8)
    assert crowded_hosts({**local, "dilation": 12.0}, 8) == ""  # the user chose D
    assert crowded_hosts({**local, "kind": "profile"}, 8) == ""
    assert crowded_hosts({}, 8) == ""  # an older results.json without the record


def test_a_report_names_the_comparisons_own_profile_relative_to_its_folder(tmp_path):
    """A report moved or committed names no path of the machine that made it."""
    out = tmp_path / "cmp"
    mode = ComputeMode("local", str(out / "profile.json"))
    assert "(profile.json)" in mode.describe(out) and str(tmp_path) not in mode.describe(out)
    assert str(out / "profile.json") in mode.describe()  # a log line keeps the full path

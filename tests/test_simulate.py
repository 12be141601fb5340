"""The cost model, `profile` and `report` commands."""

from __future__ import annotations

import json

import pytest
import torch

from dist_sqz.compute.emulate import EmulatedCompute
from dist_sqz.compute.profiles import profile_image_size
from dist_sqz.costmodel.simulate import Network, allreduce_time, ddp_buckets, simulate
from dist_sqz.models import build_model
from tests.helpers import refused_here


def _sim(cli, *args: str) -> list[dict]:
    proc = cli("simulate", *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_done_criterion_h100_8_workers(cli):
    rows = _sim(
        cli,
        "--models",
        "alexnet,squeezenet1_1",
        "--workers",
        "8",
        "--link",
        "100gbit",
        "--profile",
        "h100",
        "--batch-size",
        "256",
    )
    eff = {r["model"]: r["scaling_efficiency"] for r in rows}
    assert 0.15 <= eff["alexnet"] <= 0.30
    assert eff["squeezenet1_1"] >= 0.90
    for r in rows:
        assert set(r) >= {
            "model",
            "world_size",
            "step_time_s",
            "scaling_efficiency",
            "images_per_s",
        }
        assert r["images_per_s"] == pytest.approx(8 * 256 / r["step_time_s"])


def test_buckets_cover_every_gradient_byte():
    with torch.device("meta"):
        model = build_model("alexnet")
    buckets = ddp_buckets(model)
    assert sum(b.nbytes for b in buckets) == 244_403_360
    assert [b.ready_fraction for b in buckets] == sorted(b.ready_fraction for b in buckets)
    assert buckets[-1].ready_fraction == 1.0


def test_ready_shares_follow_the_profiles_input_size(tmp_path):
    """At 64 px AlexNet's classifier does most of the multiply-adds, so its gradients (the
    first buckets) are ready late in backward; at 224 px early. Emulation and the cost model
    both take the size from the profile whose backward time they split."""
    times = {"forward_s": 0.1, "backward_s": 0.3, "optimizer_s": 0.05}
    at_224 = {"models": {"alexnet": {"fp32": {"32": times}}}}
    at_64 = dict(at_224, image_sizes={"alexnet": 64})
    assert profile_image_size(at_224, "alexnet") == 224
    assert profile_image_size(at_64, "alexnet") == 64
    with torch.device("meta"):
        twin = build_model("alexnet")
    fc6 = 2  # buckets in launch order: fc8 and fc7's bias, fc7, fc6, the convolutions
    assert ddp_buckets(twin, image_size=224)[fc6].ready_fraction < 0.1
    fc6_ready = ddp_buckets(twin, image_size=64)[fc6].ready_fraction
    assert fc6_ready > 0.5
    net = Network(1e9 / 8)
    late, early = (simulate(["alexnet"], [2], net, p, 32, "fp32")[0] for p in (at_64, at_224))
    assert late["exposed_comm_s"] > early["exposed_comm_s"]

    path = tmp_path / "profile.json"
    path.write_text(json.dumps(at_64))
    model = build_model("alexnet")
    emu = EmulatedCompute(model, str(path), "alexnet", 32, "fp32", 1.0)
    assert emu._share[id(model.classifier[1].weight)] == pytest.approx(fc6_ready)


def test_topologies_against_closed_forms():
    s, b, a = 1e8, 1e10, 1e-5
    assert allreduce_time(s, 1, Network(b, a)) == 0
    assert allreduce_time(s, 4, Network(b, a, "ring")) == pytest.approx(6 * a + 1.5 * s / b)
    assert allreduce_time(s, 8, Network(b, a, "tree")) == pytest.approx(6 * (a + s / b))
    assert allreduce_time(s, 8, Network(b, a, "ps")) == pytest.approx(2 * (a + 8 * s / b))
    # Hierarchical within one node only uses the node link; across nodes it beats a flat ring.
    hier = Network(b, a, "hierarchical", gpus_per_node=8, intra_bandwidth_Bps=40 * b)
    assert allreduce_time(s, 64, hier) < allreduce_time(s, 64, Network(b, a, "ring"))


def test_sweep_efficiency_falls_and_squeezenet_scales_better(cli):
    rows = _sim(cli, "--models", "alexnet,squeezenet1_1", "--link", "10gbit")
    for model in ("alexnet", "squeezenet1_1"):
        eff = [r["scaling_efficiency"] for r in rows if r["model"] == model]
        assert eff[0] == 1.0 and eff == sorted(eff, reverse=True)
        assert len(eff) == 11  # 1..1024
    by = {(r["model"], r["world_size"]): r for r in rows}
    for n in (2, 64, 1024):
        assert (
            by[("squeezenet1_1", n)]["scaling_efficiency"]
            > by[("alexnet", n)]["scaling_efficiency"]
        )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--profile", "nope"], ("no profile 'nope'", "shipped: h100")),
        (["--link", "fast"], ("link rate 'fast'",)),
        (["--workers", "0"], ("workers takes integers >= 1",)),
        (["--models", "lenet"], ("unknown model 'lenet'",)),
        (["--precision", "fp8"], ("profile h100 has no alexnet at precision fp8",)),
    ],
)
def test_bad_simulate_input(cli, args, words):
    refused_here(cli, "simulate", *args, words=words)


@pytest.mark.integration  # the profile names this machine's processor: `uname -p` runs
def test_profile_then_simulate_with_it(tmp_path, cli):
    out = tmp_path / "cpu.json"
    proc = cli(
        "profile",
        "--models",
        "squeezenet1_1",
        "--batch-sizes",
        "2",
        "--image-size",
        "64",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    t = json.loads(out.read_text())["models"]["squeezenet1_1"]["fp32"]["2"]
    assert all(t[k] > 0 for k in ("forward_s", "backward_s", "optimizer_s"))
    rows = _sim(
        cli,
        "--models",
        "squeezenet1_1",
        "--workers",
        "1,2",
        "--profile",
        str(out),
        "--precision",
        "fp32",
        "--batch-size",
        "2",
        "--link",
        "1gbit",
    )
    assert rows[0]["step_time_s"] == pytest.approx(
        t["forward_s"] + t["backward_s"] + t["optimizer_s"]
    )


@pytest.mark.integration
def test_report_from_runs(tmp_path, tiny, shared_run, cli):
    """`report` on runs made elsewhere (the uncompressed and fp16 runs other tests check)."""
    plain, fp16 = shared_run(2, *tiny), shared_run(3, *tiny, "--compression", "fp16")
    proc = cli("report", str(plain), str(fp16), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Compression" in md and "| squeezenet1_1 | 3 | fp16 | 2.0 |" in md
    for png in ("steps_bytes.png", "steps_time.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    refused_here(cli, "report", str(tmp_path / "missing"), "--out", str(tmp_path / "rep2"))
    assert not (tmp_path / "rep2").exists()


def test_ring_fit_recovers_latency_and_bandwidth():
    from dist_sqz.cluster.bench import fit_ring, ring_terms
    from dist_sqz.units import parse_size

    a, b = 250e-6, 110e6
    points = []
    for n in (2, 4, 8):
        for size in (parse_size("1MB"), parse_size("64MB")):
            ca, cb = ring_terms(n, size)
            points.append((n, size, ca * a + cb / b))
    fa, fb = fit_ring(points)
    assert fa == pytest.approx(a, rel=1e-6) and fb == pytest.approx(b, rel=1e-6)
    # One size at one N cannot separate the two: bandwidth alone.
    assert fit_ring(points[1:2])[0] == 0.0
    with pytest.raises(ValueError):
        parse_size("64 parsecs")

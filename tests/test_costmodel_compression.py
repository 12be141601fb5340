"""The cost model with compression: each compressor priced by its plan, encoding time from
the profile, break-even link rates, and the CLI around them."""

from __future__ import annotations

import json

import pytest

from dist_sqz.compute.profiles import load_profile, published_profile
from dist_sqz.costmodel import from_flags, load_spec, predict
from dist_sqz.errors import UsageError
from tests.helpers import dist_sqz, refused_here


def test_compressed_rows_price_the_plan():
    prof = load_profile("h100")
    spec_ = from_flags("1gbit")
    none = predict(["alexnet"], [8], spec_, prof, 256, "bf16_cl")[0]
    topk = predict(["alexnet"], [8], spec_, prof, 256, "bf16_cl", "topk:density=0.001")[0]
    assert topk["compression"] == "topk:density=0.001" and none["compression"] == "none"
    assert none["sent_bytes"] == round(2 * 7 / 8 * 244_403_360)
    # All-gathered: each of the 8 ranks sends its payload to the 7 others.
    assert topk["sent_bytes"] == 7 * topk["payload_bytes"] < none["sent_bytes"] / 50
    # the h100 profile measured alexnet's top-k encoding on the GPU (a few ms a step)
    assert 0 < topk["compress_time_s"] < 0.05
    assert topk["step_time_s"] > none["compute_time_s"] + topk["compress_time_s"] - 1e-9
    assert topk["step_time_s"] < none["step_time_s"] / 10


def _with_encoding(seconds: float) -> dict:
    prof = published_profile({"alexnet": 2000.0, "squeezenet1_1": 1500.0}, 64, "fp32", "X")
    for model in ("alexnet", "squeezenet1_1"):
        prof["models"][model]["fp32"]["64"]["compress_s"] = {"topk:density=0.001": seconds}
    return prof


def test_measured_encoding_time_counts_and_sets_the_break_even():
    from dist_sqz.costmodel.breakeven import at_rate, break_even

    spec_ = from_flags("1gbit")
    cheap, dear = _with_encoding(0.001), _with_encoding(0.020)
    rows = [
        predict(["alexnet"], [4], spec_, p, 64, "fp32", "topk:density=0.001")[0]
        for p in (cheap, dear)
    ]
    assert rows[0]["compress_time_s"] == 0.001 and rows[1]["compress_time_s"] == 0.020
    assert rows[1]["step_time_s"] >= rows[0]["step_time_s"] + 0.019 - 1e-9
    found = break_even(["alexnet"], ["topk:density=0.001"], [4], spec_, dear, 64, "fp32")
    rate = found["compression"][0]["rate_bps"]
    assert found["compression"][0]["encoding_known"] and 1e7 < rate < 1e13

    def gain(bps: float) -> float:
        s = at_rate(spec_, bps)
        t = [
            predict(["alexnet"], [4], s, dear, 64, "fp32", v)[0]["step_time_s"]
            for v in ("none", "topk:density=0.001")
        ]
        return t[0] / t[1] - 1

    assert gain(rate * 0.9) > 0.01 > gain(rate * 1.1)


def test_one_worker_still_pays_the_encoding():
    """DDP calls the hook at world size 1 too: nothing travels, the encoding is still done."""
    spec_, dear = from_flags("1gbit"), _with_encoding(0.020)
    none, topk = (
        predict(["alexnet"], [1], spec_, dear, 64, "fp32", v)[0]
        for v in ("none", "topk:density=0.001")
    )
    assert topk["sent_bytes"] == 0 and topk["compress_time_s"] == 0.020
    assert topk["step_time_s"] == pytest.approx(none["step_time_s"] + 0.020)


def test_compression_needs_ddp_buckets_and_known_variants():
    prof = published_profile({"vgg16": 130.0}, 64, "fp32", "P100")
    with pytest.raises(UsageError, match="DDP's buckets"):
        predict(["vgg16"], [16], load_spec("horovod2017-roce25"), prof, 64, "fp32", "topk")
    with pytest.raises(UsageError, match="takes density"):
        predict(["vgg16"], [16], load_spec("dgx1-v100"), prof, 64, "fp32", "topk:rank=2")


def test_simulate_compression_and_break_even_cli(cli):
    proc = cli(
        "simulate",
        "--models",
        "alexnet,squeezenet1_1",
        "--workers",
        "1,4",
        "--link",
        "1gbit",
        "--compression",
        "none,powersgd:rank=2,powersgd:rank=4",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["compression"] for r in rows} == {"none", "powersgd:rank=2", "powersgd:rank=4"}
    assert len(rows) == 2 * 2 * 3
    proc = cli("simulate", "--break-even", "--workers", "2,8", "--link", "1gbit")
    assert proc.returncode == 0, proc.stderr
    assert "below which the compressor shortens the step" in proc.stdout
    assert "squeezenet1_1 uncompressed reaches more images/s" in proc.stdout
    for bad, words in (
        (["--compression", "zip"], ("unknown compression 'zip'",)),
        (["--compression", "topk,topk"], ("lists topk twice",)),
    ):
        refused_here(cli, "simulate", *bad, words=words)


@pytest.mark.integration
def test_profile_measures_encoding_and_simulate_uses_it(tmp_path):
    out = tmp_path / "cpu.json"
    proc = dist_sqz(
        "profile",
        "--models",
        "squeezenet1_1",
        "--batch-sizes",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--image-size",
        "32",
        "--compression",
        "topk:density=0.01",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(out.read_text())["models"]["squeezenet1_1"]["fp32"]["4"]
    encode = entry["compress_s"]["topk:density=0.01"]
    assert encode > 0
    proc = dist_sqz(
        "simulate",
        "--models",
        "squeezenet1_1",
        "--profile",
        str(out),
        "--compute-precision",
        "fp32",
        "--batch-size",
        "4",
        "--workers",
        "2",
        "--compression",
        "topk:density=0.01",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)[0]
    assert row["compress_time_s"] == pytest.approx(encode)
    assert row["step_time_s"] >= sum(entry[k] for k in ("forward_s", "backward_s")) + encode


def test_measured_encoding_survives_another_batch_size():
    """compute_times scales the phases to the asked batch; the encoding, which follows the
    gradients' size, is taken as measured (it once made the scaling fail on a dict)."""
    prof = _with_encoding(0.005)  # measured at batch 64
    row = predict(["alexnet"], [4], from_flags("1gbit"), prof, 32, "fp32", "topk:density=0.001")
    assert row[0]["compress_time_s"] == 0.005
    assert row[0]["compute_time_s"] == pytest.approx(32 / 2000)


def test_break_even_table_marks_the_rows_whose_encoding_is_unknown():
    from dist_sqz.costmodel.breakeven import format_break_even

    rows = [
        {"model": "alexnet", "compression": "topk", "world_size": 4, "rate_bps": 5.5e9},
        {"model": "squeezenet1_1", "compression": "dgc", "world_size": 4, "rate_bps": 7e10},
    ]
    rows[0]["encoding_known"], rows[1]["encoding_known"] = True, False
    text = format_break_even({"compression": rows, "levers": []}, "header")
    assert "*: encoding time unknown" in text
    lines = text.splitlines()
    assert any(x.startswith("alexnet         topk ") for x in lines)
    assert any(x.startswith("squeezenet1_1   dgc* ") for x in lines)


def test_the_shipped_h100_profile_is_what_the_gpu_session_measured():
    """dist_sqz/compute/profile_data/h100.json is benchmarks/gpu_profile.py's merge of the measured
    files in benchmarks/results/gpu/ over the derived profile: nothing edited by hand."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gpu_profile", root / "benchmarks/gpu_profile.py")
    gp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gp)
    read = [json.loads((gp.RESULTS / f).read_text()) for f in gp.DEFAULT_INPUTS]
    assert json.loads(gp.SHIPPED.read_text()) == gp.merged(*read)
    shipped = load_profile("h100")
    assert set(shipped["measured"]) == {"alexnet", "resnet50", "squeezenet1_0", "squeezenet1_1"}
    entry = shipped["models"]["squeezenet1_1"]["bf16_cl"]["256"]
    assert entry["backward_s"] < 2 * entry["forward_s"]  # measured, not the assumed 1:2

import json

import pytest
import torch

from dist_sqz.models import build_model, count_params
from dist_sqz.models.squeezenet_family import SqueezeNetFamily, fire_widths
from dist_sqz.models.stats import gflops
from tests.helpers import dist_sqz

PAPER = {"alexnet": 61_100_840, "squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496}
# The published scaling tables' models, as torchvision defines them (Inception V3 without its
# auxiliary head, as tf_cnn_benchmarks' inception3).
PUBLISHED = {
    "resnet101": 44_549_160,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "inception_v3": 23_834_568,
}


@pytest.mark.parametrize("name,params", sorted(PAPER.items()))
def test_torchvision_counts(name, params):
    assert count_params(build_model(name)) == params


@pytest.mark.parametrize("name,params", sorted(PUBLISHED.items()))
def test_published_tables_models(name, params):
    with torch.device("meta"):
        model = build_model(name)
    assert count_params(model) == params
    with torch.device("meta"):
        out = model(torch.empty(2, 3, 299 if name == "inception_v3" else 224, 224 + 75))
    assert tuple(out.shape) == (2, 1000)  # one output, also for Inception V3 in training mode


# SqueezeNext (Gholami et al., 2018) at 1000 classes: the counts the imgclsmob PyTorch port
# reports (sqnxt23_w1, sqnxt23v5_w1, sqnxt23_w2, sqnxt23v5_w2); the paper's Table 2 rounds the
# 1.0 networks to 0.72 M and 0.92 M.
SQUEEZENEXT = {
    "sqnxt23_w1": 724_056,
    "sqnxt23v5_w1": 921_816,
    "sqnxt23_w2": 2_583_752,
    "sqnxt23v5_w2": 3_366_344,
}


@pytest.mark.parametrize("name,params", sorted(SQUEEZENEXT.items()))
def test_squeezenext_counts(name, params):
    model = build_model(name, 10)
    head = 128 * int(name[-1])  # the 1x1 convolution before the classifier
    assert count_params(model) + (1000 - 10) * (head + 1) == params
    assert tuple(model(torch.randn(2, 3, 64, 64)).shape) == (2, 10)


def test_family_defaults_are_squeezenet1_0_layer_for_layer():
    ours = SqueezeNetFamily()
    ref = build_model("squeezenet1_0")
    assert count_params(ours) == 1_248_424
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    # Same widths as Table 1 of the paper: fire2 s=16, e=64+64 ... fire9 s=64, e=256+256.
    assert fire_widths(128, 128, 2, 0.125, 0.5)[0] == (16, 64, 64)
    assert fire_widths(128, 128, 2, 0.125, 0.5)[-1] == (64, 256, 256)


def test_bypass_variants():
    vanilla = count_params(SqueezeNetFamily())
    assert count_params(SqueezeNetFamily(bypass="simple")) == vanilla
    complex_ = count_params(SqueezeNetFamily(bypass="complex"))
    # 1x1 convs around fire2 (96->128), fire4 (128->256), fire6 (256->384), fire8 (384->512)
    extra = sum(i * o + o for i, o in ((96, 128), (128, 256), (256, 384), (384, 512)))
    assert complex_ == vanilla + extra
    x = torch.randn(2, 3, 64, 64)
    for bypass in ("simple", "complex"):
        assert SqueezeNetFamily(num_classes=7, bypass=bypass)(x).shape == (2, 7)


def test_metaparameters_change_the_model():
    small = SqueezeNetFamily(base_e=64, incr_e=64, squeeze_ratio=0.25, pct3x3=0.25)
    widths = fire_widths(64, 64, 2, 0.25, 0.25)
    assert widths[0] == (16, 48, 16)
    assert small(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert count_params(small) != 1_248_424


def test_gflops_match_torchvision_metadata():
    assert gflops(build_model("alexnet")) == pytest.approx(0.714, abs=0.005)
    assert gflops(build_model("squeezenet1_0")) == pytest.approx(0.819, abs=0.005)
    assert gflops(build_model("squeezenet1_1")) == pytest.approx(0.349, abs=0.005)


@pytest.mark.integration
def test_models_command_json():
    proc = dist_sqz(
        "models",
        "--workers",
        "4",
        "--format",
        "json",
        "--models",
        "alexnet,squeezenet1_0,squeezenet1_1",
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in json.loads(proc.stdout)}
    for name, params in PAPER.items():
        assert rows[name]["params"] == params
        assert rows[name]["payload_bytes"] == 4 * params
        assert rows[name]["sent_bytes"] == 6 * params  # 1.5 x payload at N = 4


# The SqueezeNet paper's Table 1, "# parameter before pruning", per layer.
PAPER_TABLE1 = {
    "conv1": 14_208,
    "fire2": 11_920,
    "fire3": 12_432,
    "fire4": 45_344,
    "fire5": 49_440,
    "fire6": 104_880,
    "fire7": 111_024,
    "fire8": 188_992,
    "fire9": 197_184,
    "conv10": 513_000,
}


@pytest.mark.integration
def test_layers_table_is_the_papers_table_1():
    proc = dist_sqz("models", "--layers", "squeezenet1_0", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    rows = {r["layer"]: r for r in table["layers"]}
    assert {k: rows[k]["params"] for k in PAPER_TABLE1} == PAPER_TABLE1
    assert table["params"] == 1_248_424 == sum(r["params"] for r in table["layers"])
    assert table["payload_bytes"] == 4_993_696
    fire2 = rows["fire2"]
    assert (fire2["s1x1"], fire2["e1x1"], fire2["e3x3"]) == (16, 64, 64)
    assert rows["fire9"]["output"] == "13x13x512" and rows["conv1"]["filter"] == "7x7/2"
    assert [r["layer"] for r in table["layers"]][:3] == ["conv1", "maxpool1", "fire2"]
    # The paper's 111x111 conv1 output is Caffe's 227 px input.
    proc = dist_sqz("models", "--layers", "squeezenet1_0", "--image-size", "227")
    assert "111x111x96" in proc.stdout and proc.stdout.rstrip().endswith("1,248,424     4,993,696")


@pytest.mark.integration
def test_layers_table_of_any_model():
    proc = dist_sqz("models", "--layers", "alexnet", "--format", "json")
    table = json.loads(proc.stdout)
    assert table["params"] == 61_100_840
    assert [r["layer"] for r in table["layers"] if r["type"] == "fc"] == ["fc6", "fc7", "fc8"]
    assert dist_sqz("models", "--layers", "nope").returncode == 2


def test_family_member_by_name():
    named = build_model("sqz_family:squeeze_ratio=0.75,pct3x3=0.5")
    assert count_params(named) == count_params(SqueezeNetFamily(squeeze_ratio=0.75))
    assert count_params(named) == 4_841_704  # the paper's "19 MB" point (18.5 MiB)


@pytest.mark.integration
def test_design_space_bytes_grow_with_sr_and_pct3x3():
    proc = dist_sqz(
        "design-space",
        "--squeeze-ratios",
        "0.125,0.5,1.0",
        "--pct3x3",
        "0.01,0.5,0.99",
        "--workers",
        "8",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    for kind in ("squeeze_ratio", "pct3x3"):
        mine = [r for r in rows if r["sweep"] == kind]
        sent = [r["sent_bytes"] for r in mine]
        assert sent == sorted(sent) and len(set(sent)) == 3, sent
        for r in mine:  # ring all-reduce at N=8: each worker sends 2(N-1)/N of the payload
            assert r["sent_bytes"] == 2 * 7 * r["payload_bytes"] // 8
            assert r["payload_bytes"] == 4 * r["params"]
            assert 0 < r["scaling_efficiency"] <= 1
    assert rows[0]["params"] == 1_248_424  # SR 0.125, pct3x3 0.5 is squeezenet1_0


@pytest.mark.integration
def test_design_space_trains_points_and_writes_plots(tmp_path):
    out = tmp_path / "ds"
    proc = dist_sqz(
        "design-space",
        "--squeeze-ratios",
        "0.125",
        "--pct3x3",
        "0.25",
        "--train-steps",
        "3",
        "--out",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "design_space.json").read_text())["rows"]
    assert [r["train_steps"] for r in rows] == [3, 3]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    assert (out / "design_space_squeeze_ratio.png").stat().st_size > 0
    assert "accuracy" in (out / "design_space.md").read_text()


@pytest.mark.integration
def test_batch_norm_models_train_and_refuse_too_small_inputs(tmp_path):
    """Inception V3 (batch norm, one output) trains; the size check runs shapes in eval mode,
    so batch norm's refusal of one 1x1 map does not pass for 'too small'."""
    out = tmp_path / "run"
    proc = dist_sqz(
        "train",
        "--model",
        "inception_v3",
        "--data",
        "synthetic",
        "--image-size",
        "75",
        "--batch-size",
        "2",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["payload_bytes"] == 4 * 23_834_568
    proc = dist_sqz(
        "train",
        "--model",
        "inception_v3",
        "--data",
        "synthetic",
        "--image-size",
        "32",
        "--out",
        str(tmp_path / "small"),
    )
    assert proc.returncode == 2
    assert "image_size 32 is too small for inception_v3; use at least 75" in proc.stderr
    assert not (tmp_path / "small").exists()


def test_the_shipped_zoo_facts_are_the_models_own_counts():
    """`dist-sqz models` reads models/zoo_facts.json instead of building every model; the
    file must be what the registered models count now (regenerate it with
    `stats.zoo_facts()` after adding one)."""
    import json

    from dist_sqz.cli.models import fact_row
    from dist_sqz.models.stats import model_facts, zoo_facts
    from dist_sqz.registry import shipped_zoo

    assert shipped_zoo() == json.loads(json.dumps(zoo_facts()))["models"]
    shipped, counted = shipped_zoo()["alexnet"], model_facts("alexnet")
    assert fact_row("alexnet", shipped, 4) == fact_row("alexnet", counted, 4)

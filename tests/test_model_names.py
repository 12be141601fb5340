"""A model named any way a user would name it (docs/models.md): dist_sqz's registry, any
torchvision classifier, timm:NAME, MODULE:CALLABLE and the `dist_sqz.models` entry points,
through `dist-sqz models` in this process; each bad name one line, naming the fault."""

from __future__ import annotations

import sys

import pytest
import torch

from dist_sqz.models import build_model, count_params, resolve
from tests.helpers import TINY, base_env, read_run, refused_here, run, torchrun_cmd

USER_MODULE = """
from torch import nn

def build(num_classes=1000):
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))

def no_classes():
    return build()

def not_a_module(num_classes=1000):
    return [num_classes]

NOT_CALLABLE = 3
"""
USER_PARAMS = 3 * 8 * 9 + 8 + 8 * 1000 + 1000


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(USER_MODULE)
    (tmp_path / "broken_nets.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_nets"
    for name in ("my_nets", "broken_nets"):
        sys.modules.pop(name, None)


def _count(cli, name: str) -> int:
    proc = cli("models", "--models", name, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (row,) = __import__("json").loads(proc.stdout)
    assert row["model"] == name
    assert row["payload_bytes"] == 4 * row["params"] + sum(row["buffer_bytes"])
    return row["params"]


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5", "efficientnet_b0"]
)
def test_every_torchvision_classifier_by_its_own_name(cli, name):
    """The count is torchvision's own published one (its weights' metadata, read offline)."""
    from torchvision.models import get_model_weights

    assert _count(cli, name) == get_model_weights(name).DEFAULT.meta["num_params"]


def test_the_users_own_builder_by_import_path(cli, user_module):
    assert _count(cli, "my_nets:build") == USER_PARAMS
    assert count_params(build_model("my_nets:build", 10)) == USER_PARAMS - 990 * 9


def test_a_package_that_ships_models_by_entry_point(cli, tmp_path, user_module, monkeypatch):
    info = tmp_path / "their_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: their-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dist_sqz.models]\ntheirnet = my_nets:build\n")
    resolve._entry_points.cache_clear()
    try:
        assert _count(cli, "theirnet") == USER_PARAMS
    finally:
        resolve._entry_points.cache_clear()


def test_a_library_models_counts_are_cached_the_users_are_not(cli, user_module, monkeypatch):
    """Counted once on the meta device and kept under the user's cache, keyed by the
    library's version (what is cached is what is read: a doctored entry shows); the user's
    own builder is counted every time; a cache that cannot be written costs nothing but
    counting again."""
    import json
    from importlib import metadata

    from dist_sqz.models_cache import CACHE_FILE, cache_dir

    assert _count(cli, "shufflenet_v2_x0_5") == 1_366_792
    assert _count(cli, "my_nets:build") == USER_PARAMS
    path = cache_dir() / CACHE_FILE
    kept = json.loads(path.read_text())
    key = f"shufflenet_v2_x0_5|torchvision {metadata.version('torchvision')}"
    assert kept[key] == {"params": 1_366_792, "gflops": 0.04, "buffer_bytes": [31_808, 448]}
    assert not any(k.startswith("my_nets") for k in kept)
    path.write_text(json.dumps({**kept, key: {**kept[key], "params": 7}}))
    assert _count(cli, "shufflenet_v2_x0_5") == 7
    monkeypatch.setenv("DIST_SQZ_CACHE", str(path))  # a file: no folder can be made there
    assert _count(cli, "mnasnet0_5") > 0
    path.write_text(json.dumps(kept))


def test_timm_models_by_timm_name(cli):
    timm = pytest.importorskip("timm")
    params = _count(cli, "timm:mixnet_s")
    assert params == count_params(timm.create_model("mixnet_s", pretrained=False))
    assert tuple(build_model("timm:mixnet_s", 7)(torch.randn(2, 3, 64, 64)).shape) == (2, 7)


@pytest.mark.parametrize(
    "name, words",
    [
        ("mobilenet_v3_smal", ("unknown model 'mobilenet_v3_smal'", "closest: mobilenet_v3_small")),
        ("my_nets:missing", ("my_nets has no 'missing'",)),
        ("my_nets:NOT_CALLABLE", ("int is not callable",)),
        ("my_nets:no_classes", ("no_classes()", "num_classes")),
        ("my_nets:not_a_module", ("returned a list, not an nn.Module",)),
        ("broken_nets:build", ("module broken_nets does not import", "no_such_dependency")),
        ("no_such_pkg.nets:build", ("module no_such_pkg.nets does not import",)),
        ("mobilenet_v3_small:width=2", ("takes no settings",)),
    ],
)
def test_a_bad_name_is_one_line(cli, user_module, tmp_path, name, words):
    refused_here(cli, "models", "--models", name, words=words)
    refused_here(cli, "train", "--model", name, "--out", str(tmp_path / "r"), words=words[:1])
    assert not (tmp_path / "r").exists()


def test_unknown_timm_names_and_missing_timm_are_one_line(cli, monkeypatch, tmp_path):
    if resolve.importlib.util.find_spec("timm"):
        refused_here(cli, "models", "--models", "timm:mixnet_q", words=("closest: timm:mixnet_s",))
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    monkeypatch.setenv("DIST_SQZ_CACHE", str(tmp_path))  # (uninstalled, its cache key goes)
    refused_here(cli, "models", "--models", "timm:mixnet_s", words=("needs timm", "dist_sqz[timm]"))


def test_a_model_too_small_for_the_image_is_one_line(cli, tmp_path):
    refused_here(
        cli,
        "train",
        *("--model", "vit_b_16", "--image-size", "32", "--out", str(tmp_path / "r")),
        words=("image_size 32 is too small for vit_b_16; use at least 224",),
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.integration
def test_two_ranks_train_a_torchvision_model_and_the_users_own(tmp_path):
    """Under torchrun (2 gloo ranks): the bytes are the model's own parameters and, for a
    BatchNorm model, its buffers broadcast from rank 0 (DDP's default, counted), every step;
    the user's module is found by the workers on PYTHONPATH."""
    (tmp_path / "my_nets.py").write_text(USER_MODULE)
    env = base_env(PYTHONPATH=str(tmp_path))
    # mobilenet_v3_small's buffers: 6,056 float32 channels' mean and variance (48,448 B),
    # 34 int64 counts (272 B); the user's net has none.
    models = (("mobilenet_v3_small", 2_542_856, 48_720), ("my_nets:build", USER_PARAMS, 0))
    for name, params, buffers in models:
        out = tmp_path / name.replace(":", "_")
        proc = run(torchrun_cmd(2, "--out", str(out), *TINY, "--model", name), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics, summary = read_run(out)
        exact = 4 * params + buffers
        assert {(m["payload_bytes"], m["sent_bytes"]) for m in metrics} == {(exact, exact)}
        assert summary["replicas_consistent"] and summary["config"]["model"] == name

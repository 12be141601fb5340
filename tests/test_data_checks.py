"""A user's data checked before the first step: every CIFAR batch read whole, every image
of a folder verified; a fault is exit 2, one line naming the file, and no run folder."""

from __future__ import annotations

import pickle
import subprocess

import pytest

from tests.helpers import (
    assert_usage_error,
    base_env,
    torchrun_cmd,
    write_cifar,
    write_images,
)

QUICK = ["--model", "squeezenet1_1", "--image-size", "64", "--batch-size", "2", "--steps", "5"]


def _edit(path, change):
    with open(path, "rb") as f:
        batch = pickle.load(f)
    change(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def _truncated(folder):
    data = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(data[: len(data) // 2])


def _label_beyond_meta(folder):
    _edit(folder / "data_batch_2", lambda b: b[b"labels"].__setitem__(5, 99))


def _short_rows(folder):
    _edit(folder / "data_batch_4", lambda b: b.__setitem__(b"data", b[b"data"][:, :3000]))


def _labels_missing(folder):
    _edit(folder / "test_batch", lambda b: b.__setitem__(b"labels", b[b"labels"][:-3]))


DAMAGE = {
    "truncated batch": (_truncated, ["data_batch_3 does not read", "truncated"]),
    "label beyond the meta's classes": (_label_beyond_meta, ["label 99", "10 classes"]),
    "rows of the wrong length": (_short_rows, ["data_batch_4", "3072 values"]),
    "fewer labels than images": (_labels_missing, ["test_batch: 37 labels for 40 images"]),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_cifar_folder_is_one_line_and_no_run(tmp_path, cli, case):
    damage, words = DAMAGE[case]
    folder = write_cifar(tmp_path / "data", 200, 40)
    damage(folder)
    proc = cli("train", "--data", f"cifar10:{folder}", *QUICK, "--out", "run")
    assert_usage_error(proc, *words)
    assert not (tmp_path / "run").exists()


def test_the_classes_come_from_the_meta_file(tmp_path, cli):
    """A 20-class folder (its meta names 20, labels up to 19) trains a 20-way head by
    default; a head narrower than the data is refused, naming --num-classes."""
    from dist_sqz.training.data import datasets_for, num_classes_of

    folder = write_cifar(tmp_path / "data", 100, 20)
    for name in ("data_batch_1", "test_batch"):
        _edit(folder / name, lambda b: b[b"labels"].__setitem__(0, 19))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(20)]}, f)
    train, held = datasets_for(f"cifar10:{folder}", 32)
    assert num_classes_of(train) == 20 and len(held.classes) == 20
    proc = cli("train", "--data", f"cifar10:{folder}", *QUICK, "--num-classes", "10")
    assert_usage_error(proc, "num_classes 10 is fewer than the 20 classes", "--num-classes 0")


def test_an_unreadable_image_is_one_line_and_no_run(tmp_path, cli):
    write_images(tmp_path / "img" / "train")
    write_images(tmp_path / "img" / "val")
    bad = sorted((tmp_path / "img" / "val").rglob("*.*"))[2]
    bad.write_bytes(bad.read_bytes()[:40])
    proc = cli("train", "--data", f"imagefolder:{tmp_path / 'img'}", *QUICK, "--out", "run")
    assert_usage_error(proc, str(bad), "does not read as an image")
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_under_torchrun_each_host_says_it_once(tmp_path):
    folder = write_cifar(tmp_path / "data", 200, 40)
    _truncated(folder)
    cmd = torchrun_cmd(2, "--data", f"cifar10:{folder}", *QUICK, "--out", str(tmp_path / "r"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=base_env(), timeout=300)
    errors = [x for x in proc.stderr.splitlines() if x.startswith("dist-sqz: error")]
    assert proc.returncode != 0, proc.stderr[-3000:]
    # torchrun prints its own launcher report; the workers print one line and no traceback
    assert "[rank0]" not in proc.stderr and "[rank1]" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and "data_batch_3 does not read" in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "r").exists()

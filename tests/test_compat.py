"""What users wrote before the code was restructured still works: every shipped recipe and
every file under configs/, every flag and YAML key of TrainConfig, and a checkpoint written
by the earlier code (tests/data/run_before_structure_step2: 4 steps of a small SqueezeNet
family member with top-k, written at commit ca9834e) resumes to the same parameters as an
uninterrupted run."""

from __future__ import annotations

import shutil

import pytest
import torch

from dist_sqz.cli import build_parser, config_from_args
from dist_sqz.comm.compression import COMPRESSORS, build_compressor
from dist_sqz.config import TrainConfig, load_yaml
from dist_sqz.training.recipes import available, recipe
from tests.helpers import ROOT, dist_sqz, read_run, write_cifar

OLD_RUN = ROOT / "tests" / "data" / "run_before_structure_step2"


def test_every_recipe_and_config_file_loads(tmp_path):
    cifar = write_cifar(tmp_path / "cifar", 20, 10)
    names = available()
    assert {"digits_alexnet", "cifar10_squeezenet1_1"} <= set(names)
    for name in names:
        data, model = name.split("_", 1)
        where = f"{data}:{cifar}" if data == "cifar10" else data
        cfg = TrainConfig.build(recipe(where, model))
        assert cfg.model == model and cfg.data == where
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        keys = load_yaml(path)
        if str(keys.get("data", "")).startswith("cifar10:"):
            keys["data"] = f"cifar10:{cifar}"
        TrainConfig.build(keys)


def test_every_train_flag_is_a_yaml_key_and_sets_it():
    """`--flag value` and `--set key=value` reach the same field, for every field."""
    parser = build_parser()
    samples = {bool: "true", int: "40", float: "0.5", str: "x"}
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in parser._subparsers._group_actions[0].choices["train"].format_help()
        ann = field.annotation
        kind = next((t for t in samples if t is ann or f"{t.__name__} |" in str(ann)), None)
        if kind is None or name in {"model", "backend", "compression", "data", "precision"}:
            continue
        value = {"trace_steps": "2-3", "torch_profile_steps": "2-3"}.get(name, samples[kind])
        args = parser.parse_args(["train", "--set", f"{name}={value}"])
        cfg = config_from_args(TrainConfig, args, {"data": "digits", "steps": 100})
        assert name in cfg.model_dump(exclude_unset=True)


def test_compressors_read_only_their_own_options():
    cfg = TrainConfig(compression="dgc", compression_density=0.05, dgc_warmup_steps=7)
    dgc = build_compressor("dgc", cfg.to_dict())
    assert (dgc.density, dgc.warmup, dgc.momentum) == (0.05, 7, 0.9)
    assert build_compressor("powersgd", {"powersgd_rank": 4}).rank == 4
    for name in COMPRESSORS:
        cls = COMPRESSORS.get(name)
        assert set(cls.KEYS.values()) <= set(TrainConfig.model_fields), name
    # DGC moves a grad_clip_norm to its own local clip (its adjust_settings), as before
    moved = TrainConfig(compression="dgc", grad_clip_norm=3.0)
    assert (moved.dgc_clip_norm, moved.grad_clip_norm) == (3.0, None)


@pytest.mark.integration
def test_a_checkpoint_written_before_the_restructure_resumes(tmp_path):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    proc = dist_sqz("train", "--resume", str(run), "--steps", "6")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.pt'} (step 4)" in proc.stdout
    args = ["--model", "sqz_family:base_e=16,incr_e=16", "--data", "digits"]
    args += ["--image-size", "32", "--batch-size", "4", "--steps", "6", "--warmup-steps", "1"]
    args += ["--compute-probe-steps", "0", "--compression", "topk"]
    args += ["--compression-density", "0.1", "--lr", "0.01", "--out", str(tmp_path / "new")]
    proc = dist_sqz("train", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics, _ = read_run(run)
    assert [m["step"] for m in metrics] == list(range(1, 7))
    # Its first 4 steps were computed on the machine that wrote it: the arithmetic is the
    # same here, the CPU's kernels need not be (AVX-512 against AVX2 moved the 4-step state
    # by 2.4e-6, relative), so the two runs agree within float tolerance, not bit for bit.
    fresh, _ = read_run(tmp_path / "new")
    for old_step, new_step in zip(metrics, fresh, strict=True):
        assert old_step["loss"] == pytest.approx(new_step["loss"], rel=1e-4)
    resumed, computed = (
        torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"]
        for r in (run, tmp_path / "new")
    )
    assert resumed.keys() == computed.keys()
    for name, value in computed.items():
        gap = float((resumed[name] - value).norm() / (value.norm() + 1e-12))
        assert gap <= 1e-4, (name, gap)


def test_a_new_compressor_is_one_class_and_one_registry_line():
    """A compressor declared here (its options next to it, one register line) is built from
    train settings, accepted by TrainConfig, and exchanges a bucket over a real (world size
    1) gloo group with its payload accounted."""
    from dataclasses import dataclass
    from typing import ClassVar

    import torch
    import torch.distributed as dist

    from dist_sqz.comm.accounting import Ledger
    from dist_sqz.comm.collectives import TorchCollectives
    from dist_sqz.comm.compression import Bucket
    from dist_sqz.comm.compression.base import AllReduceCompressor

    @COMPRESSORS.register("test_scaled_fp16")
    class ScaledFP16(AllReduceCompressor):
        """fp16 after scaling by `scale` (a stand-in for a new compressor)."""

        name = "test_scaled_fp16"

        @dataclass
        class Options:
            scale: float = 1.0

        KEYS: ClassVar[dict[str, str]] = {"scale": "compression_density"}

        def compress(self, grad):
            return (grad * self.options.scale).half(), None

        def decompress(self, payload, ctx, like):
            return payload.to(like.dtype) / self.options.scale

    try:
        cfg = TrainConfig(compression="test_scaled_fp16", compression_density=0.5)
        comp = build_compressor(cfg.compression, cfg.to_dict())
        assert comp.options.scale == 0.5
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            ledger = Ledger(1)
            grad = torch.arange(8, dtype=torch.float32)
            out = comp.exchange(
                Bucket(grad.clone(), 0, [grad.shape], ["w"]), TorchCollectives(ledger, 1)
            )
            assert torch.equal(out.wait(), grad)
            assert ledger.take_step().payload_bytes == 8 * 2  # fp16: 2 bytes a value
        finally:
            dist.destroy_process_group()
    finally:
        COMPRESSORS._items.pop("test_scaled_fp16")


def test_renamed_keys_still_work():
    """One word, one meaning: `precision` is train's autocast dtype, so simulate and
    design-space call the profile's `compute_precision` (as compare and train do); compare's
    whole-run kill is `run_timeout_s` (train's `timeout_s` is per collective); the emulated
    per-GPU batch is `compute_batch_size` in compare as in train. The old keys and flags
    still work."""
    from dist_sqz.config import CompareConfig, DesignSpaceConfig, SimulateConfig

    old = CompareConfig.build({"profile_batch_size": 64, "timeout_s": 5})
    assert (old.compute_batch_size, old.run_timeout_s, old.kill_after_s) == (64, 5, 5)
    assert SimulateConfig.build({"precision": "fp32"}).compute_precision == "fp32"
    assert DesignSpaceConfig.build({"precision": "fp32"}).compute_precision == "fp32"
    parser = build_parser()
    for argv, cls, key, value in [
        (["simulate", "--precision", "fp32"], SimulateConfig, "compute_precision", "fp32"),
        (["simulate", "--compute-precision", "fp32"], SimulateConfig, "compute_precision", "fp32"),
        (["compare", "--profile-batch-size", "64"], CompareConfig, "compute_batch_size", 64),
        (["compare", "--timeout-s", "7"], CompareConfig, "run_timeout_s", 7),
    ]:
        assert getattr(config_from_args(cls, parser.parse_args(argv)), key) == value

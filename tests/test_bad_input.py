"""Every bad input ends with exit status 2, one line on stderr, and nothing written."""

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.helpers import (
    assert_usage_error,
    base_env,
    dist_sqz,
    free_port,
    read_run,
    run,
    torchrun_cmd,
)

CASES = {
    "unknown model": (["--model", "lenet9"], ["unknown model", "squeezenet1_1"]),
    "bad family key": (["--model", "sqz_family:sr=2"], ["squeeze_ratio=..."]),
    "bad family value": (["--model", "sqz_family:squeeze_ratio=2"], ["squeeze_ratio must be"]),
    "settings on a fixed model": (["--model", "alexnet:width=2"], ["takes no settings"]),
    "unknown model via --set": (["--set", "model=lenet9"], ["unknown model", "squeezenet1_1"]),
    "negative batch": (["--batch-size", "-4"], ["batch_size must be > 0"]),
    "zero steps": (["--steps", "0"], ["steps must be > 0"]),
    "warm-up too long": (["--steps", "3", "--warmup-steps", "3"], ["warmup_steps"]),
    "missing data dir": (["--data", "imagefolder:/no/such/dir"], ["/no/such/dir"]),
    "unknown data kind": (["--data", "mnist"], ["data must be"]),
    "unknown --set key": (["--set", "batchsize=4"], ["unknown key 'batchsize'"]),
    "bad --set value": (["--set", "steps=many"], ["steps must be int"]),
    "unknown flag": (["--bogus"], ["unrecognized arguments"]),
    "bad choice": (["--backend", "carrier-pigeon"], ["invalid choice"]),
    "image too small": (["--model", "alexnet", "--image-size", "32"], ["at least 63"]),
    "missing resume": (["--resume", "no-such-run"], ["no checkpoint"]),
    "missing config": (["--config", "nope.yaml"], ["not found"]),
    "label smoothing 1": (["--label-smoothing", "1"], ["label_smoothing must be < 1"]),
    "nesterov, no momentum": (["--nesterov", "--momentum", "0"], ["nesterov needs momentum"]),
    "target above 1": (["--target-accuracy", "1.5"], ["target_accuracy must be <= 1"]),
    "target on synthetic": (["--target-accuracy", "0.5"], ["held-out split"]),
    "bad schedule": (["--lr-schedule", "linear"], ["invalid choice"]),
    "bad scaling": (["--set", "lr_scaling=cubic"], ["lr_scaling must be one of"]),
    "negative eval_every": (["--eval-every", "-1"], ["eval_every must be >= 0"]),
    "missing cifar": (["--data", "cifar10:/no/such"], ["/no/such"]),
    "bad bool": (["--set", "nesterov=maybe"], ["nesterov must be bool"]),
    "lr warm-up too long": (["--lr-warmup-steps", "5"], ["lr_warmup_steps (5)"]),
    "zero clip": (["--grad-clip-norm", "0"], ["grad_clip_norm must be > 0"]),
    "negative loader workers": (["--data-workers", "-1"], ["data_workers must be >= 0"]),
    "fp16 on mpi": (["--backend", "mpi", "--precision", "fp16"], ["fp16 needs backend gloo"]),
    "bad precision": (["--precision", "fp8"], ["invalid choice"]),
    "profile steps backwards": (["--torch-profile-steps", "3-1"], ["torch_profile_steps takes"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flags(tmp_path, cli, case):
    args, words = CASES[case]
    proc = cli("train", "--steps", "2", "--warmup-steps", "1", *args)
    assert_usage_error(proc, *words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text,words",
    [
        ("model: [unclosed\n", ["not valid YAML", "line"]),
        ("modle: alexnet\n", ["unknown key 'modle'"]),
        ("- a\n- b\n", ["mapping"]),
        ("batch_size: 1.5\n", ["batch_size must be int"]),
        ("compression: zip\n", ["compression must be one of bf16, dgc, fp16, int8, none"]),
    ],
)
def test_bad_yaml(tmp_path, cli, text, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    proc = cli("train", "--config", str(cfg))
    assert_usage_error(proc, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.integration
def test_unreachable_rendezvous(tmp_path):
    env = base_env(
        RANK="1",
        WORLD_SIZE="2",
        LOCAL_RANK="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )
    proc = run(
        [*dist_sqz_cmd(), "train", "--timeout-s", "3", "--steps", "2", "--warmup-steps", "1"],
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert_usage_error(proc, "rendezvous", "MASTER_ADDR")
    assert list(tmp_path.iterdir()) == []


def dist_sqz_cmd():
    import sys

    return [sys.executable, "-m", "dist_sqz"]


@pytest.mark.integration
def test_rank_outside_world(tmp_path):
    env = base_env(RANK="2", WORLD_SIZE="2")
    proc = run([*dist_sqz_cmd(), "train"], env=env, cwd=tmp_path)
    assert_usage_error(proc, "rank 2 is outside world size 2")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration
def test_resume_with_other_world_size_and_existing_dir(tmp_path, tiny, shared_run):
    out = Path(shutil.copytree(shared_run(1, *tiny), tmp_path / "run"))
    ckpt = out / "checkpoints" / "last.pt"
    before = {p.name: _sha(p) for p in (ckpt, out / "metrics.jsonl", out / "summary.json")}

    proc = run(torchrun_cmd(2, "--resume", str(out), "--steps", "8"), cwd=tmp_path)
    assert proc.returncode != 0
    # torchrun prints its own launcher report; the workers print one line and no traceback
    assert proc.stderr.count("dist-sqz: error: the checkpoint was written by 1 worker but") == 1
    assert "[rank0]" not in proc.stderr and "[rank1]" not in proc.stderr

    proc = dist_sqz("train", "--out", str(out), *tiny, cwd=tmp_path)
    assert_usage_error(proc, "already holds a run", "--resume")

    proc = dist_sqz("train", "--resume", str(out), "--steps", "4", cwd=tmp_path)
    assert_usage_error(proc, "already finished 4 steps")
    after = {p.name: _sha(p) for p in (ckpt, out / "metrics.jsonl", out / "summary.json")}
    assert after == before


@pytest.mark.integration
def test_corrupt_checkpoint_is_reported_and_kept(tmp_path):
    out = tmp_path / "run" / "checkpoints"
    out.mkdir(parents=True)
    (out / "last.pt").write_bytes(b"not a checkpoint")
    proc = dist_sqz("train", "--resume", str(tmp_path / "run"), cwd=tmp_path)
    assert_usage_error(proc, "cannot be read")
    assert (out / "last.pt").read_bytes() == b"not a checkpoint"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--hosts", "1"], ["at least 2"]),
        (["--hosts", "two"], ["at least 2"]),
        (["--sizes", "64 parsecs"], ["not like 4KB"]),
        (["--link", "fast"], ["not like 100mbit"]),
        (["--reps", "0"], ["--reps >= 1"]),
    ],
)
def test_bad_cluster_bench(tmp_path, cli, args, words):
    """Rejected before any namespace exists, also where namespaces are not permitted."""
    proc = cli("cluster", "bench", *args)
    assert_usage_error(proc, *words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["compare", "--warmup-steps", "-1"], ["warmup_steps must be >= 0"]),
        (["compare", "--models", "alexnet", "--image-size", "16"], ["at least 63"]),
        (["compare", "--steps", "2", "--warmup-steps", "2"], ["must exceed warmup_steps"]),
        (["compare", "--delay", "soon"], ["duration 'soon'"]),
        (["compare", "--target-accuracy", "0.9"], ["no recipes for data 'synthetic'", "digits"]),
        (["compare", "--data", "digits"], ["unless --target-accuracy"]),
        (["compare", "--target-accuracy", "1.5", "--data", "digits"], ["must be <= 1"]),
        (
            ["compare", "--target-accuracy", "0.9", "--data", "digits", "--batch-size", "4"],
            ["the recipes set batch_size", "drop --batch-size"],
        ),
        (
            ["compare", "--target-accuracy", "0.9", "--data", "digits", "--models", "resnet50"],
            ["no digits recipe for resnet50", "squeezenet1_1", "write digits_resnet50.yaml"],
        ),
        (
            ["compare", "--target-accuracy", "0.9", "--data", "digits", "--recipes", "nowhere"],
            ["recipes folder 'nowhere' not found"],
        ),
        (["compare", "--compute", "real", "--compute-profile", "h100"], ["exclude each other"]),
        (["compare", "--compute", "gpu"], ["invalid choice"]),
        (["compare", "--compute", "real", "--estimate"], ["--estimate needs emulated compute"]),
        (["compare", "--resume", "no-such-compare"], ["holds no comparison to resume"]),
        (["compare", "--arms", "alexnet+zip"], ["unknown compression 'zip'"]),
        (["compare", "--arms", "lenet"], ["lenet"]),
        (["compare", "--arms", "alexnet+topk:rank=2"], ["rank"]),
        (["compare", "--arms", "alexnet", "--models", "squeezenet1_1"], ["drop --models"]),
        (["compare", "--resume", "x", "--steps", "3"], ["drop --steps", "--time-limit"]),
        (["compare", "--resume", "no-such", "--time-limit", "30"], ["holds no comparison"]),
        (
            ["compare", "--launcher", "slurm", "--time-limit", "1:2:3:4"],
            ["not a Slurm time limit", "'1:2:3:4'"],
        ),
        (
            ["compare", "--launcher", "slurm", "--time-limit", "2", "--signal-s", "120"],
            ["--signal-s 120 is not less than --time-limit 2 (120 s)"],
        ),
        (["simulate", "--latency", "1.2.3us"], ["duration '1.2.3us'"]),
        (["simulate", "--topology", "star"], ["invalid choice"]),
        (["models", "--workers", "0"], ["at least 1"]),
        (["report", "no-such-run"], ["not found"]),
    ],
)
def test_bad_input_to_other_commands(tmp_path, cli, args, words):
    """Rejected before anything is launched or written."""
    proc = cli(*args)
    assert_usage_error(proc, *words)
    assert list(tmp_path.iterdir()) == []


BAD_SETTINGS = [
    ("topk:density=abc", "density must be float; got 'abc'"),
    ("topk:density=5", "density must be <= 1"),
    ("powersgd:rank=0", "rank must be > 0, got 0"),
    ("dgc:nesterov=maybe", "nesterov must be bool; got 'maybe'"),
]
COMMANDS_WITH_COMPRESSION = [
    ["simulate", "--models", "alexnet", "--workers", "2", "--compression"],
    ["compare", "--estimate", "--models", "alexnet", "--workers", "1,2", "--compression"],
    ["profile", "--models", "alexnet", "--out", "p.json", "--compression"],
]


@pytest.mark.parametrize("value, words", BAD_SETTINGS)
@pytest.mark.parametrize("command", COMMANDS_WITH_COMPRESSION, ids=lambda c: c[0])
def test_a_compressor_setting_obeys_the_train_settings_rule(tmp_path, cli, command, value, words):
    """`name:key=value` is checked by the same rule as `--set`/YAML (the train setting's own
    type and range), in every command that takes compressors."""
    proc = cli(*command, value)
    assert_usage_error(proc, words, value)
    assert list(tmp_path.iterdir()) == []
    arm = cli("compare", "--estimate", "--workers", "1,2", "--arms", f"alexnet+{value}")
    assert_usage_error(arm, words)


def _topk_run(shared_run, tiny, tmp_path):
    """A copy (in tmp_path) of a finished 2-step top-k run on 2 workers, to damage."""
    args = [*tiny, "--compression", "topk", "--compression-density", "0.05", "--steps", "2"]
    return Path(shutil.copytree(shared_run(2, *args), tmp_path / "run"))


@pytest.mark.integration
def test_usage_error_of_rank_1_reaches_the_terminal(tmp_path, tiny, shared_run):
    """Only rank 1 lacks its compressor state: rank 1 says so, once, and every rank exits 2
    (rank 0 does not hang waiting for it)."""
    out = _topk_run(shared_run, tiny, tmp_path)
    (out / "checkpoints" / "compressor-rank1-step2.pt").unlink()
    before = _sha(out / "checkpoints" / "last.pt")
    proc = run(torchrun_cmd(2, "--resume", str(out), "--steps", "4"), cwd=tmp_path)
    assert proc.returncode != 0
    errors = [x for x in proc.stderr.splitlines() if x.startswith("dist-sqz: error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("dist-sqz: error: rank 1: no compressor state of rank 1")
    # torchrun prints its own launcher report; the workers print one line and no traceback
    assert "[rank0]" not in proc.stderr and "[rank1]" not in proc.stderr
    assert _sha(out / "checkpoints" / "last.pt") == before


@pytest.mark.integration
def test_resume_without_any_state_of_a_rank_fails(tmp_path, tiny, shared_run):
    """All of rank 1's error-feedback state gone: the resume would not retrace the run, so it
    stops with one line instead of finishing quietly with fresh residuals on rank 1."""
    out = _topk_run(shared_run, tiny, tmp_path)
    for p in (out / "checkpoints").glob("compressor-rank1-*.pt"):
        p.unlink()
    proc = run(torchrun_cmd(2, "--resume", str(out), "--steps", "4"), cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("dist-sqz: error: rank 1: no compressor state of rank 1") == 1
    metrics, _ = read_run(out)
    assert [m["step"] for m in metrics] == [1, 2]  # nothing was trained on


@pytest.mark.integration
def test_image_folder_with_train_but_no_val(tmp_path):
    """Also through the console entry point: one line, no traceback."""
    (tmp_path / "imgs" / "train" / "a").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    proc = dist_sqz("train", "--data", f"imagefolder:{tmp_path / 'imgs'}", cwd=work)
    assert_usage_error(proc, "has train/ but no val/")
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    "args,words",
    [
        (["--squeeze-ratios", "0"], "squeeze_ratios values must be in (0, 1]"),
        (["--pct3x3", "0.5,1.0"], "pct3x3 values must be in (0, 1)"),
        (["--profile", "tpu9"], "tpu9"),
        (["--link", "fast"], "link"),
        (["--workers", "0"], "workers must be > 0"),
    ],
)
def test_design_space_bad_input(tmp_path, cli, args, words):
    proc = cli("design-space", *args)
    assert_usage_error(proc, words)
    assert list(tmp_path.iterdir()) == []


def test_design_space_refuses_a_full_out_dir(tmp_path, cli):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    assert_usage_error(cli("design-space", "--out", "ds"), "not empty")
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"

"""benchmarks/compression.py's arithmetic: thresholds, steps to them, curves (no training)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "compression_bench", ROOT / "benchmarks" / "compression.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    return mod


def run(variant: str, seed: int, curve: list[tuple[int, float]], ratio: float) -> dict:
    return {
        "model": "squeezenet1_1",
        "variant": variant,
        "seed": seed,
        "wall_s": 1.0,
        "compression_ratio": ratio,
        "payload_bytes": 1,
        "accuracy": curve[-1][1],
        "replicas_consistent": True,
        "curve": curve,
    }


def test_threshold_and_steps_to_it(bench):
    rows = [
        run("none", 0, [(100, 0.5), (200, 0.90), (300, 0.94)], 1.0),
        run("none", 1, [(100, 0.6), (200, 0.95), (300, 0.96)], 1.0),
        run("none", 2, [(100, 0.4), (200, 0.80), (300, 0.90)], 1.0),
        run("topk", 0, [(100, 0.2), (200, 0.50), (300, 0.93)], 500.0),
        run("topk", 1, [(100, 0.2), (200, 0.40), (300, 0.60)], 500.0),
        {"model": "squeezenet1_1", "variant": "topk", "seed": 2, "wall_s": 1.0, "error": "x"},
    ]
    none, topk = bench.summarize(rows)
    # median final accuracy of the uncompressed runs (0.94) minus 1 point
    assert none["threshold"] == pytest.approx(0.93)
    assert none["reached"] == 2 and none["steps_to_accuracy_median"] == 250
    assert topk["reached"] == 1 and topk["steps_to_accuracy_median"] == 300
    assert topk["runs"] == 3 and topk["failed"] == ["x"]
    assert topk["accuracy_vs_none"] == pytest.approx((0.93 + 0.60) / 2 - 0.94)
    assert topk["compression_ratio"] == 500.0


def test_report_rewrites_tables_and_curves_from_json(bench, tmp_path, monkeypatch):
    curve = [(s, s / 1000) for s in range(100, 1100, 100)]
    rows = [run("none", s, curve, 1.0) for s in range(3)]
    rows += [run("dgc", s, [(st, a / 2) for st, a in curve], 499.8) for s in range(3)]
    bench.write(rows, 0.001)
    (tmp_path / "compression.md").unlink()
    monkeypatch.setattr("sys.argv", ["compression.py", "--report"])
    bench.main()
    md = (tmp_path / "compression.md").read_text()
    # five evaluations spread over the budget, median over seeds at each
    assert "| squeezenet1_1 | step 200 | step 400 | step 600 | step 800 | step 1000 |" in md
    assert "| none | 0.200 | 0.400 | 0.600 | 0.800 | 1.000 |" in md
    assert "| dgc | 0.100 | 0.200 | 0.300 | 0.400 | 0.500 |" in md
    assert json.loads((tmp_path / "compression.json").read_text())["density"] == 0.001
    assert (tmp_path / "compression_curves.png").stat().st_size > 0


def test_stopped_runs_resume_and_finished_ones_are_read_back(bench, tmp_path):
    out = bench.run_dir(tmp_path, "alexnet", "dgc", 1, 0.001)
    # nothing there yet: a fresh run from the recipe, with the variant's flags
    cmd = bench.run_command("alexnet", "dgc", 1, 0.001, out)
    assert "--resume" not in cmd
    assert cmd[cmd.index("--seed") + 1] == "1" and cmd[cmd.index("--out") + 1] == str(out)
    assert cmd[cmd.index("--compression") + 1] == "dgc"
    assert cmd[cmd.index("--dgc-warmup-steps") + 1] == "44"  # 4/90 of alexnet's 1000 steps
    # stopped before its first checkpoint: the directory is cleared and the run starts over
    (out / "metrics.jsonl").parent.mkdir(parents=True)
    (out / "metrics.jsonl").write_text("{}\n")
    assert "--resume" not in bench.run_command("alexnet", "dgc", 1, 0.001, out)
    assert not out.exists()
    # stopped after one: it goes on from there, its settings read from the checkpoint
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"")
    cmd = bench.run_command("alexnet", "dgc", 1, 0.001, out)
    assert cmd[-2:] == ["--resume", str(out)] and "--config" not in cmd
    # finished but not recorded (stopped in between): read back without training
    (out / "summary.json").write_text(
        json.dumps(
            {
                "compression_ratio": 499.8,
                "payload_bytes": 9888,
                "accuracy": 0.95,
                "replicas_consistent": True,
            }
        )
    )
    lines = [{"step": 50, "accuracy": 0.2}, {"step": 60}, {"step": 100, "accuracy": 0.95}]
    (out / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    row = bench.one_run("alexnet", "dgc", 1, 0.001, tmp_path)
    assert row["accuracy"] == 0.95 and row["curve"] == [(50, 0.2), (100, 0.95)]
    assert row["compression_ratio"] == 499.8 and "error" not in row


@pytest.mark.integration  # the run itself is started, and refuses its settings
def test_a_failed_run_is_recorded_with_its_error_line_and_log(bench, tmp_path):
    row = bench.one_run("squeezenet1_1", "powersgd0", 0, 0.001, tmp_path)  # rank 0: bad input
    assert row["error"].startswith("dist-sqz: error: powersgd_rank"), row
    log = tmp_path / "squeezenet1_1-powersgd0-s0-d0.001.log"
    assert str(log) in row["error"] and "powersgd_rank" in log.read_text()


def test_variants_map_to_flags_and_unknown_ones_exit_2(bench, tmp_path, monkeypatch, capsys):
    recipe = {"steps": 900, "lr_warmup_steps": 90}
    dgc = bench.variant_flags("dgc", recipe, 0.001)
    sparse = ["--compression", "dgc", "--compression-density", "0.001"]
    assert dgc == [*sparse, "--dgc-warmup-steps", "40"]  # 4 of 90 "epochs"
    assert bench.variant_flags("dgc-nomask", recipe, 0.001) == [*dgc, "--no-dgc-momentum-masking"]
    assert bench.variant_flags("dgc-heavyball", recipe, 0.001) == [*dgc, "--no-nesterov"]
    powersgd8 = bench.variant_flags("powersgd8", recipe, 0.001)
    assert powersgd8[-3:] == ["8", "--powersgd-start-step", "90"]
    made = ["powersgd4", "dgc", "other", "powersgd2", "none", "dgc-heavyball", "topk"]
    assert bench.ordered(made) == [
        *("none", "topk", "dgc", "dgc-heavyball", "powersgd2", "powersgd4", "other")
    ]
    work = tmp_path / "work"
    monkeypatch.setattr(
        "sys.argv", ["compression.py", "--variants", "dgc,dgcx", "--work", str(work)]
    )
    with pytest.raises(SystemExit) as e:
        bench.main()
    assert e.value.code == 2
    assert "unknown variant 'dgcx'" in capsys.readouterr().err
    assert not work.exists() and not (tmp_path / "compression.json").exists()


def test_eta_weighs_each_remaining_run_by_its_models_wall_time(bench):
    rows = [
        {"model": "squeezenet1_1", "wall_s": 240.0},
        {"model": "squeezenet1_1", "wall_s": 360.0},
        {"model": "alexnet", "wall_s": 1200.0},
        {"model": "alexnet", "wall_s": 60.0, "resumed": True},  # a part of a run: not counted
    ]
    todo = [("alexnet", "dgc", 2), ("alexnet", "topk", 2), ("squeezenet1_1", "none", 3)]
    assert bench.eta_text(rows, todo) == "; ETA 45 min"  # 2 x 20 min + 5 min
    # A model with no time yet goes at the mean of every run's.
    assert bench.eta_text(rows, [("squeezenet1_0", "none", 0)]) == "; ETA 10 min"
    assert bench.eta_text([], todo) == ""
    assert bench.eta_text(rows, []) == ""

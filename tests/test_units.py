"""Pure functions: unit parsers, profiles, scaling efficiency, sinks and summaries, configs."""

from __future__ import annotations

import json

import pytest

from dist_sqz.compute.profiles import compute_times, load_profile, shipped
from dist_sqz.config import CompareConfig, SimulateConfig, TrainConfig, parse_set
from dist_sqz.errors import UsageError
from dist_sqz.observe.metrics import (
    JsonlSink,
    build_summary,
    medians,
    read_jsonl,
    scaling_efficiency,
)
from dist_sqz.units import parse_counts, parse_duration, parse_rate, parse_size, slurm_time_s


def test_rates_sizes_durations():
    assert parse_rate("1gbit") == 1e9
    assert parse_rate("250mbit") == 250e6
    assert parse_rate("100mbps") == 800e6  # tc: bps is bytes per second
    assert parse_size("64MB") == 64 * 2**20
    assert parse_size("1.5KB") == 1536
    assert parse_duration("5us") == pytest.approx(5e-6)
    assert parse_duration("2") == 2.0
    assert parse_counts("1, 2,4", "--workers") == [1, 2, 4]


@pytest.mark.parametrize(
    "fn, text",
    [
        (parse_rate, "fast"),
        (parse_rate, "0gbit"),
        (parse_rate, "1.2.3gbit"),
        (parse_size, "64 parsecs"),
        (parse_duration, "1.2.3us"),
        (parse_duration, "5 minutes"),
    ],
)
def test_malformed_units_are_usage_errors(fn, text):
    with pytest.raises(UsageError, match="is not like"):
        fn(text)


def test_counts_reject_non_integers_and_small_values():
    for text in ("1,x", "", "0,2"):
        with pytest.raises(UsageError, match="at least 1"):
            parse_counts(text, "--workers")
    with pytest.raises(UsageError, match="at least 2"):
        parse_counts("1", "--hosts", minimum=2)


def test_shipped_profile_loads_and_interpolates(tmp_path):
    assert "h100" in shipped()
    prof = load_profile("h100")
    t64 = compute_times(prof, "squeezenet1_1", 64, "bf16_cl")
    t256 = compute_times(prof, "squeezenet1_1", 256, "bf16_cl")
    mid = compute_times(prof, "squeezenet1_1", 160, "bf16_cl")
    for k in ("forward_s", "backward_s", "optimizer_s"):
        assert mid[k] == pytest.approx((t64[k] + t256[k]) / 2)
    with pytest.raises(UsageError, match="has no lenet"):
        compute_times(prof, "lenet", 64, "fp32")
    with pytest.raises(UsageError, match="no profile 'a100'"):
        load_profile("a100")
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": {"alexnet": {"fp32": {"64": {"forward_s": 1}}}}}')
    with pytest.raises(UsageError, match="backward_s"):
        load_profile(str(bad))
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_profile(str(bad))


def test_scaling_efficiency_definition():
    # 4 workers at 3 x the 1-worker throughput: 3 / 4.
    assert scaling_efficiency(300.0, 4, 100.0) == pytest.approx(0.75)
    assert scaling_efficiency(100.0, 1, 100.0) == 1.0


def test_jsonl_sink_drops_steps_after_the_checkpoint_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    assert sink.time_so_far_s == 0.0
    for step in range(1, 6):
        sink.write({"step": step, "loss": float(step), "step_time_s": 0.5})
    sink.close()
    sink = JsonlSink(path, keep_below_step=3)
    # W&B's training time goes on from the kept steps' (1.5 s), not from 0 or all 5 steps'.
    assert sink.time_so_far_s == pytest.approx(1.5)
    sink.write({"step": 4, "loss": 40.0})
    sink.close()
    assert [(r["step"], r["loss"]) for r in read_jsonl(path)] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
    ]


def test_medians_skip_warmup_and_summary_derives_ratios():
    records = [
        {"step": 1, "warmup": True, "step_time_s": 9.0, "payload_bytes": 100, "loss": 5.0},
        {"step": 2, "warmup": False, "step_time_s": 1.0, "payload_bytes": 100, "loss": 4.0},
        {"step": 3, "warmup": False, "step_time_s": 3.0, "payload_bytes": 100, "loss": 3.0},
        {"step": 4, "warmup": False, "step_time_s": 2.0, "payload_bytes": 100, "loss": 2.0},
    ]
    m = medians(records)
    assert m["steps_measured"] == 3 and m["step_time_s"] == 2.0
    s = build_summary(records, params=100, model="x")
    assert s["compression_ratio"] == 4.0 and s["final_loss"] == 2.0
    assert s["uncompressed_payload_bytes"] == 400 and s["model"] == "x"
    json.dumps(s)


def test_configs_validate_once_with_one_line_errors():
    cfg = TrainConfig.build({"steps": 5}, parse_set(["lr=1e-3", "name=123"]))
    assert cfg.lr == 1e-3 and cfg.name == "123"
    for layer, words in [
        ({"steps": "many"}, "steps must be int"),
        ({"batchsize": 4}, "unknown key 'batchsize'"),
        ({"compression": "zip"}, "compression must be one of bf16, dgc, fp16, int8, none"),
        ({"model": "alexnet", "image_size": 16}, "at least 63"),
    ]:
        with pytest.raises(UsageError, match=words):
            TrainConfig.build(layer)
    assert CompareConfig.build({"workers": "1,2", "models": "alexnet"}).workers == [1, 2]
    with pytest.raises(UsageError, match="warmup_steps must be >= 0"):
        CompareConfig.build({"warmup_steps": -1})
    with pytest.raises(UsageError, match="duration '1.2.3us'"):
        SimulateConfig.build({"latency": "1.2.3us"})


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train"],
        ["models"],
        ["cluster"],
        ["cluster", "run"],
        ["cluster", "bench"],
        ["compare"],
        ["simulate"],
        ["profile"],
        ["report"],
    ],
)
def test_every_help_works(argv, capsys):
    from dist_sqz.cli import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: dist-sqz" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30", 1800),
        ("1:30", 90),
        ("2:00:00", 7200),
        ("1-2", 93600),
        ("1-2:3", 93780),
        ("1-0:0:5", 86405),
        ("UNLIMITED", None),
    ],
)
def test_slurm_time_limits_in_every_sbatch_form(text, seconds):
    assert slurm_time_s(text) == seconds


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "-5", "1-2-3", "1:", "1.5"])
def test_a_slurm_time_limit_not_in_sbatch_form_is_refused(text):
    with pytest.raises(ValueError, match="not a Slurm time limit"):
        slurm_time_s(text)

"""`dist-sqz frontier` in this process, on a profile written here: the table, the Pareto set,
top-1 with its source, the files, and bad input."""

from __future__ import annotations

import json

import pytest

from dist_sqz.costmodel.frontier import frontier_rows
from tests.helpers import refused_here

MODELS = ["alexnet", "squeezenet1_1", "mobilenet_v3_small", "sqnxt23_w1"]


@pytest.fixture
def profile(tmp_path):
    """Compute per model (forward, backward, optimizer at batch 8): SqueezeNet fastest."""
    times = {"alexnet": 0.30, "squeezenet1_1": 0.05, "mobilenet_v3_small": 0.08, "sqnxt23_w1": 0.1}
    path = tmp_path / "prof.json"
    models = {
        m: {
            "fp32": {
                "8": {"forward_s": t / 3, "backward_s": 2 * t / 3 - 0.001, "optimizer_s": 0.001}
            }
        }
        for m, t in times.items()
    }
    path.write_text(
        json.dumps({"device": "test", "image_sizes": dict.fromkeys(times, 224), "models": models})
    )
    return path


def test_the_frontier_table_pareto_set_and_files(cli, tmp_path, profile):
    out = tmp_path / "fr"
    args = ["--models", ",".join(MODELS), "--workers", "1,4", "--link", "1gbit"]
    proc = cli("frontier", *args, "--profile", str(profile), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "frontier.json").read_text())
    rows = {(r["model"], r["world_size"]): r for r in result["rows"]}
    assert len(rows) == 8
    sq, alex = rows["squeezenet1_1", 4], rows["alexnet", 4]
    assert sq["payload_bytes"] == 4_941_984 and alex["payload_bytes"] == 244_403_360
    assert sq["top1"] == pytest.approx(58.178) and "SqueezeNet1_1_Weights" in sq["source"]
    assert rows["sqnxt23_w1", 4]["top1"] is None and rows["sqnxt23_w1", 4]["source"] == "unknown"
    # AlexNet is less accurate than MobileNet V3 Small and slower at N = 4: dominated
    assert rows["mobilenet_v3_small", 4]["pareto"] and not alex["pareto"]
    assert sq["images_per_s"] > alex["images_per_s"] and sq["pareto"]
    assert not rows["sqnxt23_w1", 4]["pareto"]  # no published top-1: never on it
    md = (out / "frontier.md").read_text()
    assert "## Pareto set" in md and "mobilenet_v3_small (67.7)" in md
    assert "sqnxt23_w1: unknown" in md
    for png in ("frontier_bytes.png", "frontier_throughput.png"):
        assert (out / png).stat().st_size > 1000
    assert not (out / "profile.json").exists()  # a profile given is not copied


def test_pareto_needs_both_better():
    facts = {m: {"top1": t, "source": "s", "params": 1, "gflops": 0.1} for m, t in
             (("a", 60.0), ("b", 70.0), ("c", 70.0), ("d", None))}  # fmt: skip
    predicted = [
        {"model": m, "world_size": 2, "images_per_s": ips, "compression": "none"}
        for m, ips in (("a", 100.0), ("b", 50.0), ("c", 40.0), ("d", 500.0))
    ]
    on = {r["model"]: r["pareto"] for r in frontier_rows(facts, predicted)}
    assert on == {"a": True, "b": True, "c": False, "d": False}


@pytest.mark.parametrize(
    "args, words",
    [
        (["--models", "lenet5"], ("unknown model 'lenet5'",)),
        (["--workers", "0"], ("workers takes integers >= 1",)),
        (["--cluster", "dgx1-v100", "--link", "1gbit"], ("drop --link",)),
        (["--models", "alexnet", "--profile", "nope"], ("no profile 'nope'",)),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, args, words):
    refused_here(cli, "frontier", *args, "--out", str(tmp_path / "fr"), words=words)
    assert not (tmp_path / "fr").exists()

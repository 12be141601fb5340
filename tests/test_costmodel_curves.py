"""Measured bus-bandwidth curves for the cost model: nccl-tests' tables, `cluster bench`
files, and `cluster curve`, which turns one into a cluster spec's curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dist_sqz.costmodel.collective import allreduce_time
from dist_sqz.costmodel.spec import build_spec
from dist_sqz.errors import UsageError
from tests.helpers import refused_here

# all_reduce_perf's table as nccl-tests prints it (two sizes of an 8-GPU node).
NCCL_TESTS_TABLE = (Path(__file__).parent / "data" / "all_reduce_perf.txt").read_text()


def test_measured_curves_from_nccl_tests_and_cluster_bench():
    from dist_sqz.costmodel.curves import curve_yaml, read_busbw

    table = read_busbw(NCCL_TESTS_TABLE)
    assert table == {2**20: pytest.approx(48.02e9), 2**30: pytest.approx(362.74e9)}
    as_json = json.dumps(
        {"results": [{"size": 2**20, "out_of_place": {"time": 38.2, "bus_bw": 48.02}}]}
    )
    assert read_busbw(as_json) == {2**20: pytest.approx(48.02e9)}
    bench = {
        "points": [
            {"world_size": 2, "bytes": 2**22, "busbw_Bps": 5e7},
            {"world_size": 8, "bytes": 2**22, "busbw_Bps": 6e7},
        ]
    }
    assert read_busbw(json.dumps(bench)) == {2**22: pytest.approx(6e7)}  # the most hosts
    bench["points"][0]["time_median_s"] = 2**22 / 4e7  # 2 hosts: busbw = algbw
    assert read_busbw(json.dumps(bench), hosts=2) == {2**22: pytest.approx(5e7)}
    assert read_busbw(json.dumps(bench), hosts=2, statistic="median") == {2**22: pytest.approx(4e7)}
    with pytest.raises(UsageError, match="no all-reduce sizes"):  # a bench that measured none
        read_busbw(json.dumps({"points": []}))
    for hosts, statistic in ((4, "fastest"), (8, "median")):  # not measured; no median times
        with pytest.raises(UsageError, match="cluster bench"):
            read_busbw(json.dumps(bench), "b.json", hosts, statistic)
    text = curve_yaml(table, "intra")
    s = build_spec({"gpus_per_node": 8, **yaml.safe_load(text)})
    assert allreduce_time(s, 2**30, 8) == pytest.approx(2 * 7 / 8 * 2**30 / 362.74e9, rel=1e-3)
    with pytest.raises(UsageError):
        read_busbw("nothing to see")


def test_cluster_curve_reads_a_bench_file_at_the_host_count_and_statistic_asked(tmp_path, cli):
    bench = {
        "points": [
            {
                "world_size": 4,
                "bytes": 2**21,
                "time_s": 0.03,
                "time_median_s": 0.04,
                "busbw_Bps": 1.5 * 2**21 / 0.03,
            },
        ]
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    proc = cli("cluster", "curve", str(path), "--level", "inter", "--time", "median")
    assert proc.returncode == 0, proc.stderr
    curve = yaml.safe_load(proc.stdout)["inter"]["busbw_curve"]
    assert curve == {"2MB": "78.64mbps"}  # 1.5 x 2 MiB / 40 ms
    assert "2MB: 104.9mbps" in cli("cluster", "curve", str(path)).stdout  # the fastest
    refused_here(
        cli, "cluster", "curve", str(path), "--hosts", "8", words=("measured 4 hosts, not 8",)
    )
    refused_here(cli, "cluster", "curve", str(tmp_path / "none.json"), words=("not found",))

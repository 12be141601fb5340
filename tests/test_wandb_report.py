"""The W&B Report of a comparison, built offline: its definition is W&B's own (its loader
reads it back) and holds the claim and every panel; saving goes through W&B's Reports API
against a stub of its network client only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

wr_interface = pytest.importorskip("wandb_workspaces.reports.v2.interface")

import wandb_workspaces.reports.v2 as wr  # noqa: E402

from dist_sqz.observe.wandb_report import (  # noqa: E402
    REPORT_FILE,
    Offline,
    build_report,
    definition,
    load_definition,
    publish,
)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "time_to_accuracy"


def _report():
    result = json.loads((RESULTS / "results.json").read_text())
    return result, build_report(result, "team", "dist_sqz", "compare-long14", "long14")


def test_the_definition_is_w_and_b_s_own_and_holds_the_claim_and_every_panel():
    """Written as W&B stores a report (its ReportViewspec, by alias) and read back by W&B's
    own loader, with no mapping of ours."""
    result, report = _report()
    d = json.loads(json.dumps(definition(report)))
    assert {"displayName", "project", "spec"} <= set(d) and "blocks" in d["spec"]
    back = load_definition(d)
    assert isinstance(back, wr.Report) and (back.entity, back.project) == ("team", "dist_sqz")
    assert back.title == "dist_sqz comparison long14"
    text = " ".join(getattr(b, "text", "") or "" for b in back.blocks if hasattr(b, "text"))
    assert "squeezenet1_1 reaches 0.95 on 4 hosts at 1gbit 7.7x sooner than alexnet" in text
    (grid,) = [b for b in back.blocks if isinstance(b, wr.PanelGrid)]
    (runs,) = grid.runsets
    assert (runs.entity, runs.project, runs.name) == ("team", "dist_sqz", "compare-long14")
    assert "Group" in str(runs.filters) and "compare-long14" in str(runs.filters)
    panels = {f"{type(p).__name__}: {getattr(p, 'title', None)}" for p in grid.panels}
    assert panels == {
        "BarPlot: Bytes each rank sends per step",
        "LinePlot: Scaling efficiency against workers",
        "LinePlot: Cluster throughput (images/s) against workers",
        "LinePlot: Held-out accuracy against training time (target 0.95)",
        "WeavePanelSummaryTable: None",
    }
    eff = next(p for p in grid.panels if (getattr(p, "title", "") or "").startswith("Scaling"))
    assert eff.x.name == "world_size"
    assert [m.name for m in eff.y] == [
        "scaling_efficiency/alexnet",
        "scaling_efficiency/squeezenet1_1",
    ]


def test_without_a_connection_the_definition_is_written(tmp_path, monkeypatch):
    def no_network():
        raise Exception("not logged in to W&B")

    monkeypatch.setattr(wr_interface, "_get_api", no_network)
    _, report = _report()
    with pytest.raises(Offline, match="not logged in"):
        publish(report, tmp_path)
    saved = json.loads((tmp_path / REPORT_FILE).read_text())
    assert saved == json.loads(json.dumps(definition(report)))


class _Service:
    """W&B's GraphQL transport, answered here: the project's id, then the saved view."""

    app_url = "https://wandb.example"

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def execute_graphql(self, _query, variables=None):
        v = dict(variables or {})
        self.sent.append(v)
        if "spec" not in v:
            return {"project": {"internalId": "proj-1"}}
        project = {"id": "proj-1", "name": v["projectName"], "entityName": v["entityName"]}
        view = {
            "id": "rep-42",
            "name": v["name"],
            "displayName": v["displayName"],
            "description": v["description"],
            "project": project,
            "spec": v["spec"],
        }
        return {"upsertView": {"view": view}}


class _Api:
    default_entity = "team"

    def __init__(self) -> None:
        self._service_api = _Service()
        self.created: list[tuple[str, str]] = []

    def projects(self, _entity):
        return []

    def create_project(self, name, entity):
        self.created.append((name, entity))


def test_online_the_report_is_saved_and_its_url_returned(tmp_path, monkeypatch):
    api = _Api()
    monkeypatch.setattr(wr_interface, "_get_api", lambda: api)
    _, report = _report()
    url = publish(report, tmp_path)
    assert url.startswith("https://wandb.example/team/dist_sqz/reports/") and "rep-42" in url
    assert api.created == [("dist_sqz", "team")]
    spec = json.loads(api._service_api.sent[-1]["spec"])
    assert len(spec["blocks"]) >= 4 and not (tmp_path / REPORT_FILE).exists()
    # what is saved online is the offline definition, but for the project's id the server
    # gave the run set
    offline = json.loads(json.dumps(definition(report)))["spec"]
    for block in spec["blocks"]:
        for runset in block.get("metadata", {}).get("runSets", []):
            assert runset["project"].pop("id") == "proj-1"
    assert spec == offline


def test_the_publish_line_names_only_runs_that_exist(tmp_path, monkeypatch, capsys):
    """A comparison made without --wandb has no offline runs to sync: the line says to rerun
    it with --wandb offline; with some, it names exactly those."""
    import shutil

    from dist_sqz.cli import main

    def no_network():
        raise Exception("not logged in to W&B")

    monkeypatch.setattr(wr_interface, "_get_api", no_network)
    cmp = tmp_path / "cmp"
    shutil.copytree(RESULTS, cmp)
    assert main(["report", str(cmp), "--wandb-report", "team/dist_sqz"]) == 0
    line = capsys.readouterr().out
    assert "wandb sync" not in line and "--wandb offline" in line
    run = cmp / "runs" / "alexnet-n2" / "wandb" / "offline-run-20261207_000000-abc"
    run.mkdir(parents=True)
    assert main(["report", str(cmp), "--wandb-report", "team/dist_sqz"]) == 0
    assert f"wandb sync {run}" in capsys.readouterr().out

"""`dist-sqz report COMPARE_DIR --wandb-report ENTITY/PROJECT`: a comparison as a W&B Report.

Built with W&B's Reports API (`wandb-workspaces`, the `wandb` extra): the claim lines and
the two levers as text; bytes per step, scaling efficiency and throughput of every arm, and
held-out accuracy against training time (emulated seconds, `train_time_s`), over the
comparison's runs (its W&B group, each run's job type its model); the results table the
comparison logged. Online the report is saved and its URL printed. Without a connection
(or a W&B login) its definition, in W&B's own stored form (`definition`), goes to
COMPARE_DIR/wandb_report.json, and the same command publishes it later, once the runs are
synced (the command names the offline runs to sync).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from dist_sqz.errors import UsageError, first_line

REPORT_FILE = "wandb_report.json"


def _reports():
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise UsageError(
            "--wandb-report needs W&B's Reports API: pip install -e '.[wandb]' (wandb-workspaces)"
        ) from None
    return wr


def parse_target(text: str) -> tuple[str, str]:
    entity, _, project = text.partition("/")
    if not entity or not project or "/" in project:
        raise UsageError(f"--wandb-report takes ENTITY/PROJECT; got {text!r}")
    return entity, project


def build_report(result: dict[str, Any], entity: str, project: str, group: str, name: str):
    """The Report object (nothing is sent)."""
    from dist_sqz.compare.report import claim_lines, lever_lines

    wr = _reports()
    runs = wr.Runset(entity=entity, project=project, name=group, filters=f"Group = '{group}'")
    setup = (
        f"{', '.join(result['models'])} on {result['workers']} workers, {result['link']} "
        f"links, compression {', '.join(result.get('compression') or ['none'])}"
    )
    target = result.get("target_accuracy")
    arms = list(dict.fromkeys(r.get("arm") or r["model"] for r in result["rows"]))

    def against_n(key: str, title: str):  # the comparison's own run logs these per arm
        return wr.LinePlot(title=title, x="world_size", y=[f"{key}/{a}" for a in arms])

    panels = [
        wr.BarPlot(
            title="Bytes each rank sends per step",
            metrics=["summary/sent_bytes"],
            groupby="JobType",
        ),
        against_n("scaling_efficiency", "Scaling efficiency against workers"),
        against_n("images_per_s", "Cluster throughput (images/s) against workers"),
        wr.WeavePanelSummaryTable(table_name="results"),
    ]
    if target is not None:
        panels.insert(
            3,
            wr.LinePlot(
                title=f"Held-out accuracy against training time (target {target})",
                x="train_time_s",
                y=["accuracy"],
            ),
        )
    claims = claim_lines(result["rows"], result) or ["(no uncompressed pair to compare)"]
    levers = lever_lines(result["rows"], result)
    blocks = [
        wr.H1(text="The paper's claim, measured"),
        wr.MarkdownBlock(text="\n".join(claims)),
        *(
            [wr.H2(text="The two levers"), wr.MarkdownBlock(text="\n".join(levers))]
            if levers
            else []
        ),
        wr.H2(text="Every run of the comparison"),
        wr.PanelGrid(runsets=[runs], panels=panels),
    ]
    return wr.Report(
        entity=entity,
        project=project,
        title=f"dist_sqz comparison {name}",
        description=setup,
        blocks=blocks,
    )


def _unnamed(runset: Any) -> Any:
    twin = copy.copy(runset)
    twin.entity, twin.project = "", ""
    return twin


def definition(report: Any) -> dict[str, Any]:
    """The report as W&B stores it: the view `Report.save` upserts (`ReportViewspec`, by
    its JSON aliases), which `internal.ReportViewspec.model_validate` and
    `Report._from_model` read back. Built without the server: a run set's project is
    named (entity, project) but holds no internal id, which only the server knows; saving
    looks it up."""
    wr = _reports()
    from wandb_workspaces.reports.v2 import internal

    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    named = [g.runsets for g in grids]
    try:  # run sets without a project build offline; their project is put back below
        for g in grids:
            g.runsets = [_unnamed(r) for r in g.runsets]
        model = report._to_model()
    finally:
        for g, runsets in zip(grids, named, strict=True):
            g.runsets = runsets
    built = [b for b in model.spec.blocks if isinstance(b, internal.PanelGrid)]
    for grid, runsets in zip(built, named, strict=True):
        for built_set, runset in zip(grid.metadata.run_sets, runsets, strict=True):
            built_set.project = internal.Project(name=runset.project, entity_name=runset.entity)
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def load_definition(saved: dict[str, Any]) -> Any:
    """A written definition as W&B's own Report object (its loader, no mapping)."""
    wr = _reports()
    from wandb_workspaces.reports.v2 import internal

    return wr.Report._from_model(internal.ReportViewspec.model_validate(saved))


def publish(report: Any, out: Path) -> str:
    """Save the report (the URL), or without a connection write its definition (the path)."""
    try:
        report.save()
        return str(report.url)
    except Exception as e:  # no login, no network: W&B raises many kinds
        path = out / REPORT_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(definition(report), indent=1) + "\n")
        tmp.replace(path)
        raise Offline(f"{path} ({first_line(e, 160)})") from None


class Offline(Exception):
    """The report could not be saved; its definition was written instead."""

"""`dist-sqz report COMPARE_DIR --wandb-report ENTITY/PROJECT`: a comparison as a W&B Report.

Built with W&B's Reports API (`wandb-workspaces`, the `wandb` extra): the claim lines and
the two levers as text; bytes per step, scaling efficiency and throughput of every arm, and
held-out accuracy against training time (emulated seconds, `train_time_s`), over the
comparison's runs (its W&B group, each run's job type its model); the results table the
comparison logged. Online the report is saved and its URL printed. Without a connection
(or a W&B login) its definition goes to COMPARE_DIR/wandb_report.json, and the same command
publishes it later, once the runs are synced (`wandb sync COMPARE_DIR/runs/*/wandb/offline-run-*
COMPARE_DIR/wandb/offline-run-*`).
"""

from __future__ import annotations

import dataclasses
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


def definition(obj: Any) -> Any:
    """The report as plain JSON, each block and panel with its type: what it would show.
    (Its saved view spec needs the server: a run set asks it for the project's id.)"""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = (f.name for f in dataclasses.fields(obj) if not f.name.startswith("_"))
        return {"type": type(obj).__name__, **{k: definition(getattr(obj, k)) for k in fields}}
    if isinstance(obj, (list, tuple)):
        return [definition(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): definition(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


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

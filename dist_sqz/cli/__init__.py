"""`dist-sqz` command line: one module per subcommand, one error boundary for all of them.

Each subcommand module has `add(subparsers)` (its parser) and `run(args) -> exit status`.
`main` is the only place errors become exit statuses: `UsageError` -> one line, exit 2;
`RunFailure` (a failed collective, a full disk) -> one line, exit 1; `Stopped` (SIGTERM or
SIGINT, checkpoint saved) -> one line, exit 143/130; Ctrl-C elsewhere -> 130. Internal bugs
keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import Any, Literal, get_args, get_origin

from dist_sqz.errors import RunFailure, Stopped, UsageError

EXIT_USAGE = 2
COMMANDS = (
    "train",
    "models",
    "cluster",
    "compare",
    "simulate",
    "frontier",
    "design_space",
    "deep_compress",
    "profile",
    "report",
)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def add_config_flags(p: argparse.ArgumentParser, cls: Any) -> None:
    """One flag per field of a pydantic config class (`batch_size` -> `--batch-size`), plus
    `--config FILE` and `--set KEY=VALUE`. Flags left out stay unset, so the
    config file and the defaults underneath them keep their values."""
    from dist_sqz.config import registry_choices

    p.add_argument("--config", help="YAML file of settings (keys as below, with underscores)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="set any key; repeatable"
    )
    for name, field in cls.model_fields.items():
        ann = field.annotation
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": name}
        if type(None) in get_args(ann):  # X | None: the flag takes an X; `--set key=null`
            ann = next(a for a in get_args(ann) if a is not type(None))  # clears it
        if ann is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(ann) is list:
            kw["metavar"] = "A,B,..."
        elif get_origin(ann) is Literal:
            kw["choices"] = list(get_args(ann))
        else:
            kw["type"] = ann if ann in (int, float) else str
            kw["choices"] = registry_choices(name)
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else repr(default)
        text = f"{field.description} (default: {shown})".replace("%", "%%")  # argparse formats
        old_names = [old for old, new in getattr(cls, "ALIASES", {}).items() if new == name]
        flags = ["--" + n.replace("_", "-") for n in [name, *old_names]]
        if old_names:
            text += f" (formerly {', '.join(flags[1:])})".replace("%", "%%")
        p.add_argument(*flags, help=text, **kw)


def config_from_args(cls: Any, args: argparse.Namespace, *under: dict[str, Any]) -> Any:
    """Defaults < `under` layers < --config file < flags < --set, validated once."""
    from dist_sqz.config import load_yaml, parse_set

    layers = list(under)
    if getattr(args, "config", None):
        layers.append(load_yaml(args.config))
    layers.append({k: getattr(args, k) for k in cls.model_fields if hasattr(args, k)})
    layers.append(parse_set(getattr(args, "set", [])))
    return cls.build(*layers)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line. Only the subcommand `argv` names gets its flags (building them
    reads the plug-in registries, which import torch: 1.5 s of every `--help`); the others
    are listed with their one-line help. `argv` None: every subcommand in full."""
    parser = Parser(
        prog="dist-sqz",
        description="Data-parallel training that measures exactly what gradient exchange "
        "costs (SqueezeNet vs AlexNet), and cuts it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name in COMMANDS:
        module = import_module(f"dist_sqz.cli.{name}")
        if argv is None or chosen.replace("-", "_") == name:
            module.add(sub)
        else:
            sub.add_parser(name.replace("_", "-"), help=module.HELP)
    return parser


def report_usage_error(e: UsageError) -> None:
    """Print `e` once: by the rank that found it, or, for a fault every rank finds, by the
    first worker of each host (so a file missing on one node is still reported there)."""
    from dist_sqz.comm.env import rank_hint

    rank, local_rank = rank_hint()
    if e.rank is None and local_rank == 0:
        print(f"dist-sqz: error: {e}", file=sys.stderr, flush=True)
    elif e.rank == rank:
        prefix = "" if rank == 0 else f"rank {rank}: "
        print(f"dist-sqz: error: {prefix}{e}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(argv).parse_args(argv)
        return import_module(f"dist_sqz.cli.{args.command.replace('-', '_')}").run(args)
    except UsageError as e:
        report_usage_error(e)
        return EXIT_USAGE
    except RunFailure as e:
        if str(e):
            print(f"dist-sqz: error: {e}", file=sys.stderr, flush=True)
        return 1
    except Stopped as e:
        if str(e):
            print(f"dist-sqz: {e}", file=sys.stderr, flush=True)
        return e.status
    except KeyboardInterrupt:
        print("dist-sqz: interrupted", file=sys.stderr)
        return 130

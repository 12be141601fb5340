"""How fast does the command line start? Each command's wall time over `python -c "import
torch"`'s, measured in the same run, interleaved round by round (so a load that comes and
goes meets every command alike): the median ratio of --rounds, with its range.

    python benchmarks/startup.py [--rounds 7] [--out benchmarks/results]

Bounds (issue "Structure, step 3"): `--help` and `simulate --help` <= 0.5x, one `simulate`
point <= 1.5x, `models` <= 2x. Writes startup.json and startup.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

DS = [sys.executable, "-m", "dist_sqz"]
COMMANDS = {
    "import torch": ([sys.executable, "-c", "import torch"], None),
    "dist-sqz --help": ([*DS, "--help"], 0.5),
    "dist-sqz simulate --help": ([*DS, "simulate", "--help"], 0.5),
    "dist-sqz simulate (one point)": (
        [*DS, "simulate", "--models", "alexnet", "--workers", "8"],
        1.5,
    ),
    "dist-sqz models": ([*DS, "models"], 2.0),
}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    for cmd, _ in COMMANDS.values():  # warm the page cache; not counted
        timed(cmd)
    ratios: dict[str, list[float]] = {k: [] for k in COMMANDS if k != "import torch"}
    base: list[float] = []
    for _ in range(a.rounds):
        torch_s = timed(COMMANDS["import torch"][0])
        base.append(torch_s)
        for name in ratios:
            ratios[name].append(timed(COMMANDS[name][0]) / torch_s)
    rows = []
    lines = [
        f'Wall time over `python -c "import torch"` (median {statistics.median(base):.2f} s), '
        f"median of {a.rounds} interleaved rounds, [min, max]:",
        "",
        "| command | ratio | range | bound | within |",
        "|---|---|---|---|---|",
    ]
    for name, rs in ratios.items():
        bound = COMMANDS[name][1]
        med = statistics.median(rs)
        rows.append(
            {
                "command": name,
                "ratio": med,
                "min": min(rs),
                "max": max(rs),
                "bound": bound,
                "within": med <= bound,
            }
        )
        lines.append(
            f"| `{name}` | {med:.2f}x | [{min(rs):.2f}, {max(rs):.2f}] | "
            f"<= {bound}x | {'yes' if med <= bound else 'no'} |"
        )
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    (out / "startup.json").write_text(
        json.dumps({"torch_import_s": base, "rows": rows}, indent=2) + "\n"
    )
    (out / "startup.md").write_text(
        "# Command-line start-up\n\n" + text + "\n\nMade by `python benchmarks/startup.py`.\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

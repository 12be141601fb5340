"""Does a comparison run through Slurm measure what the emulated launcher measures?

Runs the same rows twice on this machine: once with `compare`'s emulated launcher (one
emulated host per worker, links shaped to link / D), once with `--launcher slurm` on a Slurm
test cluster (`dist-sqz cluster up --slurm`) whose nodes are emulated hosts with links at
link / D. Same compute mode (each worker padded to one core's measured times) and the same
fixed dilation D in both, so the two differ only in how the rows were launched (torchrun
per host here, sbatch + srun + torchrun there). Prints each row's scaling efficiency under
both and their ratio; writes OUT/README.md and OUT/summary.json. Resumable: a finished side
is kept, a partial one continued (`compare --resume`).

    python benchmarks/compare_slurm.py [--out benchmarks/results/compare_slurm]

About 15 minutes here (2 cores): AlexNet's 244 MB a step over 333 Mbit/s links dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dist_sqz.units import format_rate, parse_rate


def dist_sqz(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    print("$ dist-sqz " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "dist_sqz", *args], env=env, text=True)


def side(out: Path, args: list[str], env: dict[str, str] | None = None) -> dict:
    results = out / "results.json"
    if (out / "compare.yaml").exists() and not results.exists():  # prepared, not yet run
        dist_sqz("compare", "--resume", str(out), env=env)
    elif results.exists():
        done = json.loads(results.read_text())
        want = len(done["workers"]) * len(done["models"])
        if len(done["rows"]) == want and not done["failed"]:
            return done
        dist_sqz("compare", "--resume", str(out), env=env)
    else:
        dist_sqz("compare", *args, "--out", str(out), env=env)
    return json.loads(results.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/compare_slurm")
    ap.add_argument("--models", default="alexnet,squeezenet1_1")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--link", default="1gbit")
    ap.add_argument("--dilation", type=float, default=3.0)
    a = ap.parse_args()
    out = Path(a.out)
    common = ["--models", a.models, "--workers", a.workers, "--link", a.link]
    common += ["--dilation", f"{a.dilation:g}"]
    emulated = side(out / "emulated", common)
    hosts = max(int(n) for n in a.workers.split(","))
    shaped = format_rate(parse_rate(a.link) / a.dilation)
    up = subprocess.run(
        [
            sys.executable,
            "-m",
            "dist_sqz",
            "cluster",
            "up",
            "--hosts",
            str(hosts),
            "--link",
            shaped,
            "--slurm",
        ],
        capture_output=True,
        text=True,
    )
    if up.returncode != 0:
        print(up.stderr, file=sys.stderr)
        return 1
    print(up.stdout, flush=True)
    conf = next(x for x in up.stdout.splitlines() if x.startswith("export SLURM_CONF="))
    env = {**os.environ, "SLURM_CONF": conf.split("=", 1)[1]}
    folder = out / "slurm"
    if not (folder / "compare.yaml").exists():
        # The same padding on both sides: the emulated side's measured profile, not a second
        # measurement (two took 0.415 and 0.469 s for AlexNet's step on a loaded machine).
        folder.mkdir(parents=True)
        shutil.copy(out / "emulated" / "profile.json", folder / "profile.json")
        settings = {
            "models": a.models.split(","),
            "workers": [int(n) for n in a.workers.split(",")],
            "link": a.link,
            "dilation": a.dilation,
            "launcher": "slurm",
            "socket_ifname": "eth0",
            "out": str(folder),
            "resume": "",
        }
        (folder / "compare.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    try:
        slurm = side(folder, [], env)
    finally:
        dist_sqz("cluster", "down")
    key = lambda r: (r["arm"], r["world_size"])  # noqa: E731
    by = {key(r): r for r in emulated["rows"]}
    lines = [
        f"Scaling efficiency, emulated launcher against Slurm ({hosts} nodes, emulated hosts, "
        f"links {shaped} = {a.link} / D, D = {a.dilation:g}, the same compute padding):",
        "",
        "| arm | N | emulated | slurm | slurm / emulated | Slurm job | queued s | ran s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for r in slurm["rows"]:
        e = by.get(key(r), {})
        eff_e, eff_s = e.get("scaling_efficiency"), r.get("scaling_efficiency")
        ratio = eff_s / eff_e if eff_e and eff_s else None
        job = r.get("slurm") or {}
        rows.append(
            {
                "arm": r["arm"],
                "world_size": r["world_size"],
                "emulated": eff_e,
                "slurm": eff_s,
                "ratio": ratio,
                "job": job,
            }
        )
        cells = [
            r["arm"],
            r["world_size"],
            f"{eff_e:.3f}" if eff_e else "-",
            f"{eff_s:.3f}" if eff_s else "-",
            f"{ratio:.3f}" if ratio else "-",
            job.get("job_id", "-"),
            job.get("queue_s", "-"),
            job.get("run_s", "-"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    multi = [x["ratio"] for x in rows if x["ratio"] and x["world_size"] > 1]
    if multi:
        worst = max(multi, key=lambda x: abs(x - 1))
        lines += [
            "",
            f"Multi-node rows: slurm / emulated from {min(multi):.3f} to "
            f"{max(multi):.3f} (worst {abs(worst - 1) * 100:.1f}% off).",
        ]
    text = "\n".join(lines)
    print(text)
    (out / "README.md").write_text(
        "# compare through Slurm against the emulated launcher\n\n"
        + text
        + "\n\nMade by `python benchmarks/compare_slurm.py`.\n"
    )
    (out / "summary.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

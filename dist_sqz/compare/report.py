"""The report of a comparison (`compare`'s results.json): tables, the claim in numbers, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dist_sqz.compare.arms import row_arm
from dist_sqz.compute.modes import crowded_hosts
from dist_sqz.observe.markdown import mb, ms, num, table
from dist_sqz.observe.plotting import fit_title, pyplot

PLOTS = ("bytes_per_step.png", "scaling_efficiency.png", "throughput.png")
ACCURACY_PLOT = "accuracy_vs_time.png"


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("error")]


def claim_lines(rows: list[dict[str, Any]], result: dict[str, Any] | None = None) -> list[str]:
    """The paper's claim, quantified from the rows (AlexNet vs each SqueezeNet, both
    uncompressed; compressed arms are compared in `lever_lines`)."""
    rows = [r for r in _ok(rows) if (r.get("compression") or "none") == "none"]
    by = {(r["model"], r["world_size"]): r for r in rows}
    lines = []
    alex = [r for r in rows if r["model"] == "alexnet"]
    for sq in sorted({r["model"] for r in rows if r["model"].startswith("squeezenet")}):
        a1 = next(iter(alex), None)
        s1 = next((r for r in rows if r["model"] == sq), None)
        if not a1 or not s1:
            continue
        ratio = a1["payload_bytes"] / s1["payload_bytes"]
        lines.append(
            f"- **Bytes:** AlexNet hands collectives {ratio:.2f}x the payload of {sq} per step "
            f"({a1['payload_bytes']:,} vs {s1['payload_bytes']:,} bytes; paper: ~49x)."
        )
        for a in alex:
            n = a["world_size"]
            s = by.get((sq, n))
            if n == 1 or s is None:
                continue
            lines.append(
                f"- **N = {n}:** scaling efficiency AlexNet {num(a['scaling_efficiency'], '.3f')}"
                f" vs {sq} {num(s['scaling_efficiency'], '.3f')}; cluster throughput "
                f"{sq} / AlexNet = {s['images_per_s'] / a['images_per_s']:.2f}x "
                f"({s['images_per_s']:.1f} vs {a['images_per_s']:.1f} img/s)."
            )
        if result and result.get("target_accuracy") is not None:
            lines += accuracy_claims(alex, by, sq, result)
    return lines


def accuracy_claims(
    alex: list[dict[str, Any]], by: dict[tuple[str, int], dict], sq: str, result: dict[str, Any]
) -> list[str]:
    """One line per N: who reaches the target sooner, by how much, with how many bytes."""
    target, link = result["target_accuracy"], result["link"]
    lines = []
    for a in alex:
        n = a["world_size"]
        s = by.get((sq, n))
        if s is None:
            continue
        hosts = "1 host" if n == 1 else f"{n} hosts"
        ta, ts = a.get("time_to_accuracy_s"), s.get("time_to_accuracy_s")
        if ta is None or ts is None:
            missed = " and ".join(
                f"{m} ({r['accuracy']:.3f} at its end)" if r.get("accuracy") is not None else m
                for m, r in (("alexnet", a), (sq, s))
                if r.get("time_to_accuracy_s") is None
            )
            lines.append(f"- **{target} on {hosts}:** {missed} did not reach it.")
            continue
        fewer = (
            f", with {a['sent_bytes'] / s['sent_bytes']:.1f}x fewer bytes per step"
            if s["sent_bytes"]
            else " (one host: no bytes sent)"
        )
        faster, word = (ta / ts, "sooner") if ts <= ta else (ts / ta, "later")
        lines.append(
            f"- **{target} on {hosts}:** {sq} reaches {target} on {hosts} at {link} "
            f"{faster:.1f}x {word} than alexnet ({ts:.0f} s vs {ta:.0f} s){fewer}."
        )
        pa, ps = (
            a.get("h100_projected_time_to_accuracy_s"),
            s.get("h100_projected_time_to_accuracy_s"),
        )
        if pa and ps:
            lines.append(
                f"  - *Projection, not measured:* on H100s (cost model, h100 profile, bf16, "
                f"{link} links) the same step counts take {ps:.1f} s vs {pa:.1f} s."
            )
    return lines


def lever_lines(rows: list[dict[str, Any]], result: dict[str, Any]) -> list[str]:
    """Every arm (model, compressor) at each N, first to last: by time to the target, or
    without one by cluster images/s; bytes each rank sends per step beside each."""
    rows = _ok(rows)
    if all((r.get("compression") or "none") == "none" for r in rows):
        return []
    target, link = result.get("target_accuracy"), result["link"]
    lines = []
    for n in sorted({r["world_size"] for r in rows}):
        mine = [r for r in rows if r["world_size"] == n]
        hosts = "1 host" if n == 1 else f"{n} hosts"
        if target is not None:
            done = sorted(
                (r for r in mine if r.get("time_to_accuracy_s") is not None),
                key=lambda r: r["time_to_accuracy_s"],
            )
            cells = [
                f"{row_arm(r)} {r['time_to_accuracy_s']:.0f} s ({mb(r['sent_bytes'])} MB/step)"
                for r in done
            ] + [f"{row_arm(r)} did not reach it" for r in mine if r not in done]
            lines.append(f"- **To {target} on {hosts} at {link}:** " + ", ".join(cells) + ".")
        else:
            ranked = sorted(mine, key=lambda r: -r["images_per_s"])
            cells = [
                f"{row_arm(r)} {r['images_per_s']:.1f} img/s ({mb(r['sent_bytes'])} MB/step)"
                for r in ranked
            ]
            lines.append(f"- **{hosts} at {link}:** " + ", ".join(cells) + ".")
    return lines


def _setup(result: dict[str, Any]) -> str:
    data = result.get("data", "synthetic")
    if result.get("target_accuracy") is not None:
        what = (
            f"each model trained with its recipe (configs/{data}_<model>.yaml) on {data} until "
            f"held-out accuracy {result['target_accuracy']}"
        )
    else:
        what = (
            f"{result['steps']} steps ({result['warmup_steps']} warm-up), batch "
            f"{result['batch_size']} per worker at {result['image_size']}px, synthetic data"
        )
    hosts = (
        "one emulated host per worker, links shaped to " + result["link"]
        if result["emulated_hosts"]
        else result["note"]
    )
    compute = (result.get("compute") or {}).get("description", "real compute")
    priced = f" Cost model: cluster spec {result['cluster']}." if result.get("cluster") else ""
    return f"{what}; {result.get('backend', 'gloo')}; {hosts}. Compute: {compute}.{priced}"


def write_compare_report(result: dict[str, Any], out: Path) -> None:
    rows = result["rows"]
    ok = _ok(rows)
    header = ["model", "N", "D", "payload MB", "sent MB", "wire MB", "wire/sent", "step ms"]
    header += ["comm ms", "comm busy ms", "exposed ms", "encode ms", "late ms", "img/s"]
    header += ["efficiency"]
    kind = (result.get("compute") or {}).get("kind", "real")
    header += ["cost model", "analytic"]
    main = table(
        header,
        [
            [
                row_arm(r),
                r["world_size"],
                num(r.get("dilation"), "g"),
                mb(r["payload_bytes"]),
                mb(r["sent_bytes"]),
                mb(r["wire_bytes"]),
                num(r["wire_over_sent"], ".4f"),
                f"{r['step_time_s'] * 1e3:.1f}",
                num(ms(r["comm_time_s"]), ".1f"),
                num(ms(r.get("comm_busy_s")), ".1f"),
                num(ms(r.get("exposed_comm_s")), ".1f"),
                _encode_cell(r, kind),
                num(ms(r.get("emulation_late_s")), ".1f")
                + (" (!)" if r.get("overran_padding") else ""),
                f"{r['images_per_s']:.1f}",
                num(r.get("scaling_efficiency"), ".3f"),
                num(r.get("simulated_efficiency"), ".3f"),
                num(r.get("analytic_efficiency"), ".3f"),
            ]
            for r in ok
        ],
    )
    md = [
        "# dist_sqz compare",
        "",
        _setup(result),
        "",
        "Medians over measured steps. `D` = time dilation (1 = real time). `efficiency` = "
        "images_per_s(N) / (N x images_per_s(1)); `cost model` = `dist-sqz simulate` fed the "
        "same compute profile and link; `analytic` = compute / (compute + sent / link) with "
        "compute = the 1-worker step time. `comm ms` sums each collective's time from issue to "
        "completion (it can exceed the step time); `comm busy ms` is the time at least one "
        "collective was in flight; `exposed ms` the part of the step spent waiting for "
        "communication; `encode ms` the compressor's encoding and decoding per step (compute, "
        "not in `comm ms`): measured here, and in local mode padded like the rest of the "
        "compute from its CPU time; under a GPU profile the profile's own figure, or unknown "
        "where it has none (this machine's CPU says nothing of a GPU's encoding); "
        "`late ms` how much real work overran the emulated compute, (!) where "
        "more than 5% of the step: that row measured this machine's cores, not the network.",
        "",
        *main,
        "",
    ]
    most = max((r["world_size"] for r in ok), default=0)
    crowded = crowded_hosts(result.get("compute") or {}, most)
    if crowded:
        md += [crowded, ""]
    if result.get("target_accuracy") is not None:
        md += [
            f"## Time to accuracy {result['target_accuracy']}",
            "",
            *table(
                ["model", "N", "accuracy", "steps_to_accuracy", "images_to_accuracy"]
                + ["time_to_accuracy_s", "H100 projection s"],
                [
                    [
                        row_arm(r),
                        r["world_size"],
                        num(r.get("accuracy"), ".3f"),
                        num(r.get("steps_to_accuracy"), "d"),
                        num(r.get("images_to_accuracy"), ",d"),
                        num(r.get("time_to_accuracy_s"), ".1f"),
                        num(r.get("h100_projected_time_to_accuracy_s"), ".2f"),
                    ]
                    for r in ok
                ],
            ),
            "",
            "time_to_accuracy_s sums the training steps' times up to the first evaluation at or "
            "above the target (evaluation excluded). The H100 column is a projection: "
            "steps_to_accuracy x the cost model's step time with the shipped h100 profile.",
            "",
        ]
    inside = [r for r in ok if r.get("step_time_max_s") is not None]
    if inside:
        md += [
            "## Inside the step",
            "",
            "`step max ms`: the slowest rank's step; `straggler ms`: how long the first rank at "
            "the step's first collective waits for the last; `overlap`: the share of comm busy "
            "time inside the compute window (medians; docs/design.md). Each run traced two "
            "measured steps: `runs/<run>/trace.json` (Perfetto, chrome://tracing; a Gantt "
            "chart of one: `dist-sqz report runs/<run>`).",
            "",
            *table(
                ["model", "N", "step max ms", "straggler ms", "overlap"],
                [
                    [
                        row_arm(r),
                        r["world_size"],
                        num(ms(r.get("step_time_max_s")), ".1f"),
                        num(ms(r.get("straggler_wait_s")), ".2f"),
                        num(r.get("comm_overlap_frac"), ".2f"),
                    ]
                    for r in inside
                ],
            ),
            "",
        ]
    if result.get("failed"):
        md += ["## Rows that failed", "", *[f"- {f}" for f in result["failed"]], ""]
    plots = [*PLOTS] + ([ACCURACY_PLOT] if result.get("target_accuracy") is not None else [])
    md += [
        "## The paper's claim, measured",
        "",
        *claim_lines(rows, result),
        "",
        *(
            ["## The two levers: a smaller model or compressed gradients", "", *levers, ""]
            if (levers := lever_lines(rows, result))
            else []
        ),
        "## Plots",
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    if ok:
        _plots(ok, out, _mode_label(result))
        if result.get("target_accuracy") is not None:
            _accuracy_plot(ok, out, result)


def _encode_cell(row: dict[str, Any], kind: str) -> str:
    if (row.get("compression") or "none") == "none":
        return "–"
    if kind == "profile":
        known = row.get("cost_model_compress_time_s")
        return "unknown" if known is None else f"{known * 1e3:.1f} (profile)"
    return num(ms(row.get("compress_time_s")), ".1f")


def _mode_label(result: dict[str, Any]) -> str:
    kind = (result.get("compute") or {}).get("kind", "real")
    hosts = f"links {result['link']}" if result["emulated_hosts"] else "loopback"
    what = {
        "local": "emulated: N copies of this machine",
        "profile": f"emulated: {(result.get('compute') or {}).get('profile')} compute",
        "real": "real compute, shared cores",
    }[kind]
    return f"{what}; {hosts}"


def _plots(rows: list[dict[str, Any]], out: Path, label: str) -> None:
    plt = pyplot()

    models = list(dict.fromkeys(row_arm(r) for r in rows))
    series = {
        m: sorted((r for r in rows if row_arm(r) == m), key=lambda r: r["world_size"])
        for m in models
    }

    # Sent bytes are 0 at N = 1: those bars are left out rather than drawn at 10^0.
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(models))
    ns = sorted({r["world_size"] for r in rows if r["sent_bytes"]})
    for k, m in enumerate(models):
        mine = [r for r in series[m] if r["sent_bytes"]]
        xs = [ns.index(r["world_size"]) + k * width for r in mine]
        ax.bar(xs, [r["sent_bytes"] for r in mine], width, label=f"{m}")
    if ns:
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(ns))], [f"N={n}" for n in ns])
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "one worker only: nothing is sent", ha="center", transform=ax.transAxes)
    ax.set_ylabel("sent bytes / step / rank (log)")
    fit_title(ax, f"Gradient bytes per step\n({label})")
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=110)
    plt.close(fig)

    for name, key, ylabel, title in (
        (PLOTS[1], "scaling_efficiency", "scaling efficiency", "Scaling efficiency vs N"),
        (PLOTS[2], "images_per_s", "images / s (cluster)", "Throughput vs N"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in models:
            pts = [(r["world_size"], r[key]) for r in series[m] if r.get(key) is not None]
            if not pts:
                continue
            (line,) = ax.plot(*zip(*pts, strict=True), marker="o", label=m)
            sim = [
                (r["world_size"], r["simulated_efficiency"])
                for r in series[m]
                if key == "scaling_efficiency" and r.get("simulated_efficiency") is not None
            ]
            if sim:
                ax.plot(
                    *zip(*sim, strict=True),
                    ls=":",
                    color=line.get_color(),
                    label=f"{m} (cost model)",
                )
        ax.set_xticks(sorted({r["world_size"] for r in rows}))
        ax.set_xlabel("workers N")
        ax.set_ylabel(ylabel)
        fit_title(ax, f"{title}\n({label})")
        if key == "scaling_efficiency":
            ax.set_ylim(0, 1.1)
        if ax.get_legend_handles_labels()[0]:  # no N=1 run: no efficiency to plot
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)


def _accuracy_plot(rows: list[dict[str, Any]], out: Path, result: dict[str, Any]) -> None:
    """Held-out accuracy against training time: one panel per N, one curve per model."""
    plt = pyplot()

    ns = sorted({r["world_size"] for r in rows})
    width = max(4.0 * len(ns), 6.0)  # one panel still leaves the title room
    fig, axes = plt.subplots(
        1, len(ns), figsize=(width, 3.8), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, n in zip(axes[0], ns, strict=True):
        for r in (r for r in rows if r["world_size"] == n and r.get("accuracy_curve")):
            _, t, acc = zip(*r["accuracy_curve"], strict=True)
            ax.plot(t, acc, marker=".", label=row_arm(r))
        ax.axhline(result["target_accuracy"], color="grey", ls="--", lw=1)
        ax.set_title(f"N = {n}", fontsize=10)
        ax.set_xlabel(
            "training time (s, emulated)"
            if result.get("compute", {}).get("kind") != "real"
            else "training time (s)"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("held-out accuracy")
    title = f"Time to accuracy ({_mode_label(result)})"
    fit_title(fig, title)
    fig.savefig(out / ACCURACY_PLOT, dpi=110)
    plt.close(fig)

"""Tables and the error-vs-NFE plot of the sampler benchmark (``samplers``); the section itself goes
through ``report.write_section``."""

from __future__ import annotations

import csv
import math
import platform
from pathlib import Path

SECTION = "## Samplers vs diffusers (Gaussian mixture, exact denoiser)"
FAMILIES = {
    "polydiff": ["unipc", "dpmpp_3m", "dpmpp_2m", "dpmpp_2s", "lms", "heun", "euler"],
    "diffusers": ["UniPCMultistep", "DPMSolverMultistep", "DEISMultistep", "LMSDiscrete", "PNDM", "EulerDiscrete"],
}


def deterministic(rows, library, schedule, nfe, tuned=None):
    """Finite deterministic rows of one library at one budget (tuned: None = all, False = standard grids)."""
    return [
        r for r in rows
        if r["library"] == library and r["schedule"] == schedule and r["nfe"] == nfe and not r["stochastic"]
        and (tuned is None or r["tuned"] == tuned) and math.isfinite(r["error"])
    ]  # fmt: skip


def best(rows, key="error"):
    return min(rows, key=lambda r: (r[key], r["error"])) if rows else None


def describe(row) -> str:
    return f"{row['method']}({row['config']}) [{row['steps']} steps]" if row else "-"


def target_rows(rows, schedule, nfes):
    """Per n: polydiff at n against diffusers at 2n. 'vs best' compares with the diffusers config of lowest
    median error (its error and its flip share); 'strict' with diffusers' lowest error and, separately,
    lowest flip share over all configs. A polydiff config meets a reading if it is <= on both numbers."""
    out = []
    for n in nfes:
        theirs = deterministic(rows, "diffusers", schedule, 2 * n)
        if not theirs:
            continue
        d_best, d_flips = best(theirs), min(r["flips"] for r in theirs)
        verdict = {}
        for scope, tuned in (("any", None), ("standard", False)):
            ours = deterministic(rows, "polydiff", schedule, n, tuned)
            for reading, flip_bar in (("best", d_best["flips"]), ("strict", d_flips)):
                ok = [r for r in ours if r["error"] <= d_best["error"] and r["flips"] <= flip_bar]
                verdict[scope, reading] = (best(ok) if ok else best(ours), bool(ok))
        out.append((n, d_best, d_flips, verdict))
    return out


def yes(flag: bool) -> str:
    return "**met**" if flag else "not met"


def fmt(row) -> str:
    return f"{row['error']:.2e} / {row['flips']:.3f}" if row else "-"


def target_table(rows, schedule, nfes) -> list[str]:
    lines = [
        "| NFE n | polydiff at n (best config meeting the bar, else lowest error) | error / flips "
        "| diffusers at 2n, lowest error | error / flips | diffusers' fewest flips at 2n "
        "| vs best scheduler | strict | with standard grids only (vs best / strict) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, d_best, d_flips, v in target_rows(rows, schedule, nfes):
        pick, ok_best = v["any", "best"]
        lines.append(
            f"| {n} | {describe(pick)} | {fmt(pick)} | {describe(d_best)} | {fmt(d_best)} | {d_flips:.3f} "
            f"| {yes(ok_best)} | {yes(v['any', 'strict'][1])} "
            f"| {yes(v['standard', 'best'][1])} / {yes(v['standard', 'strict'][1])} |"
        )
    return lines


def best_table(rows, schedule, nfes) -> list[str]:
    lines = [
        "| NFE | polydiff, standard grids | error / flips / SW2 | polydiff, tuned grid | error / flips / SW2 "
        "| diffusers | error / flips / SW2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for nfe in nfes:
        cells = []
        for library, tuned in (("polydiff", False), ("polydiff", True), ("diffusers", None)):
            row = best(deterministic(rows, library, schedule, nfe, tuned))
            cells += [describe(row), f"{fmt(row)} / {row['sw2']:.3f}" if row else "-"]
        lines.append(f"| {nfe} | " + " | ".join(cells) + " |")
    return lines


def family_table(rows, schedule, nfes) -> list[str]:
    """Best median error (flip share) of each sampler over its configs and standard grids."""
    lines = ["| library | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for library in ("polydiff", "diffusers"):
        methods = sorted({r["method"] for r in rows if r["library"] == library and not r["stochastic"]})
        for method in methods:
            cells = []
            for nfe in nfes:
                tuned = False if library == "polydiff" else None
                row = best([r for r in deterministic(rows, library, schedule, nfe, tuned) if r["method"] == method])
                cells.append(f"{row['error']:.1e} ({row['flips']:.3f})" if row else "-")
            lines.append(f"| {library} | {method} | " + " | ".join(cells) + " |")
    return lines


def stochastic_table(rows, schedule, nfes, floor) -> list[str]:
    header = "| library | sampler (config) | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [header, "|---|---|" + "---|" * len(nfes)]
    ours = [r for r in rows if r["stochastic"] and r["schedule"] == schedule]
    keys = sorted({(r["library"], r["method"], r["config"]) for r in ours})
    for library, method, config in keys:
        cells = []
        for nfe in nfes:
            match = [r for r in ours if (r["library"], r["method"], r["config"]) == (library, method, config)
                     and r["nfe"] == nfe]  # fmt: skip
            cells.append(f"{match[0]['sw2']:.3f}" if match else "-")
        lines.append(f"| {library} | {method}({config}) | " + " | ".join(cells) + " |")
    lines.append(f"| - | fresh true samples vs true samples (noise floor) | {floor:.3f} |" + " |" * (len(nfes) - 1))
    return lines


def plot(rows, schedules, nfes, target_nfes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(schedules), figsize=(6.5 * len(schedules), 6.0), squeeze=False)
    for ax, schedule in zip(axes[0], schedules):
        for library, style in (("polydiff", "-"), ("diffusers", "--")):
            for method in FAMILIES[library]:
                tuned = False if library == "polydiff" else None
                picks = [
                    (n, best([r for r in deterministic(rows, library, schedule, n, tuned) if r["method"] == method]))
                    for n in nfes
                ]
                pts = [(n, r["error"]) for n, r in picks if r]
                if pts:
                    ax.plot(*zip(*pts), style, lw=1, alpha=0.55, label=f"{library} {method}")
        for library, tuned, style, name in (("polydiff", False, "o-", "polydiff best, standard grids"),
                                            ("polydiff", None, "s-", "polydiff best incl. tuned grid"),
                                            ("diffusers", None, "^--", "diffusers best")):  # fmt: skip
            pts = [(n, best(deterministic(rows, library, schedule, n, tuned))) for n in nfes]
            ax.plot(*zip(*[(n, r["error"]) for n, r in pts if r]), style, lw=2.5, ms=7, label=name)
        halved = [(n, best(deterministic(rows, "diffusers", schedule, 2 * n))) for n in target_nfes]
        target = [(n, r["error"]) for n, r in halved if r]
        ax.plot(*zip(*target), "k*", ms=13, label="target: diffusers best at 2 x NFE")
        ax.set(xscale="log", yscale="log", xlabel="NFE (denoiser evaluations)", ylabel="median per-sample error",
               title=f"{schedule} schedule")  # fmt: skip
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7.5, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def write_csv(rows, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def verdict_lines(rows, schedules, nfes) -> list[str]:
    """One line per (schedule, n): the verdicts, with polydiff's lowest-error config at n against diffusers'."""
    lines = []
    for schedule in schedules:
        for n, d_best, d_flips, v in target_rows(rows, schedule, nfes):
            ours = best(deterministic(rows, "polydiff", schedule, n))
            lines.append(
                f"- {schedule}, NFE {n}: vs the best diffusers scheduler at {2 * n}: {yes(v['any', 'best'][1])}; "
                f"strict: {yes(v['any', 'strict'][1])}; standard grids only: {yes(v['standard', 'best'][1])} / "
                f"{yes(v['standard', 'strict'][1])}. Lowest polydiff error at {n}: {ours['error']:.2e} "
                f"(flips {ours['flips']:.3f}) vs {d_best['error']:.2e} (flips {d_best['flips']:.3f}, fewest of any "
                f"config {d_flips:.3f}) for diffusers at {2 * n}: error ratio {ours['error'] / d_best['error']:.2f}."
            )
    return lines


def compose(rows, facts, setup: str, notes: str, nfes, target_nfes, plot_path: str) -> str:
    """The markdown of the section: setup text, target verdicts and tables per schedule, plot."""
    schedules = list(facts)
    out = [SECTION, "", setup.strip(), "", "### Target", "",
           "> At every NFE in {5, 10, 20}, polydiff's best deterministic sampler is at least as accurate (median "
           "error and mode-flip share) as the best diffusers scheduler at twice that NFE.", "",
           "Read two ways: against the diffusers config with the lowest median error at 2n (its error and its "
           "flip share), and strictly (diffusers' lowest error and, separately, its lowest flip share over all "
           "configs). Verdicts (tuned grid allowed / standard grids only):", ""]  # fmt: skip
    verdicts = [(s, n, v) for s in schedules for n, _, _, v in target_rows(rows, s, target_nfes)]
    for scope, name in (("any", "tuned grids allowed"), ("standard", "standard grids only")):
        met = [f"{s} NFE {n}" for s, n, v in verdicts if v[scope, "best"][1]]
        listed = ", ".join(met) or "none"
        out.append(f"**Met with {name}: {len(met)} of {len(verdicts)}** ({listed}; vs the best scheduler).")
    out += [""] + verdict_lines(rows, schedules, target_nfes)
    out += ["", notes.strip()]
    for schedule in schedules:
        f = facts[schedule]
        out += ["", f"### {schedule} schedule (sigma {f['sigma_min']:.4g} .. {f['sigma_max']:.4g})", "",
                "Target, polydiff at n vs diffusers at 2n (error = median per-sample error, flips = mode-flip "
                "share):", ""]  # fmt: skip
        out += target_table(rows, schedule, target_nfes)
        out += ["", "Best deterministic configuration per NFE (error / flips / sliced W2 to fresh data):", ""]
        out += best_table(rows, schedule, nfes)
        out += ["", "Best median error (flip share) per sampler over its configs (polydiff: standard grids only):", ""]
        out += family_table(rows, schedule, nfes)
        out += ["", "Stochastic samplers, sliced W2 to fresh true samples (deterministic ones for comparison are in "
                "the table above):", ""]  # fmt: skip
        out += stochastic_table(rows, schedule, nfes, f["sw2_floor"])
    out += ["", f"![median error vs NFE]({plot_path})", ""]
    return "\n".join(out)

"""Plots people would rather look at than read (matplotlib, written as PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from moloch_exp.results import RoundsResult, TrendResult, probe_results  # noqa: E402


def _err(mean, ci):
    if mean is None or not ci or ci[0] is None:
        return [[0], [0]]
    return [[mean - ci[0]], [ci[1] - mean]]


def draw_rounds(axes, rounds: RoundsResult, label: str = "", color=None) -> None:
    """Win rates (left axis) and each probe's rate (right axis) against round, with 95% intervals."""
    win_ax, probe_ax = axes
    for name, (xs, ys, cis) in rounds.series().items():
        ax = win_ax if name.startswith("win rate") else probe_ax
        pts = [(x, y, ci) for x, y, ci in zip(xs, ys, cis) if y is not None]
        if not pts:
            continue
        err = [[y - (ci[0] if ci and ci[0] is not None else y) for _, y, ci in pts],
               [(ci[1] if ci and ci[1] is not None else y) - y for _, y, ci in pts]]
        ax.errorbar([x for x, _, _ in pts], [y for _, y, _ in pts], yerr=err, marker="o", capsize=3,
                    ls="--" if name.endswith("previous") else "-", color=color,
                    label=f"{label}{name}")
    win_ax.axhline(0.5, ls=":", c="grey", lw=1)
    win_ax.set_ylabel("win rate (95% CI)")
    probe_ax.set_ylabel("flagged share (Wilson 95% CI)")
    for ax in axes:
        ax.set_xlabel("round (0 = base)")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(0, rounds.n_rounds + 1))
        ax.legend(fontsize=7)


def cell_plots(results: dict, out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    wr = results.get("win_rate", {})
    if wr:
        fig, ax = plt.subplots(figsize=(5, 3))
        for i, (pair, w) in enumerate(wr.items()):
            if w["mean"] is not None:
                ax.errorbar([i], [w["mean"]], yerr=_err(w["mean"], w["ci95"]), fmt="o", capsize=4)
        ax.axhline(0.5, ls="--", c="grey", lw=1)
        ax.set_xticks(range(len(wr)), list(wr), rotation=15)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share preferring second (95% CI)")
        ax.set_title("Head-to-head win rate")
        fig.tight_layout()
        fig.savefig(out_dir / "win_rate.png", dpi=120)
        plt.close(fig)
        written.append("win_rate.png")
    probes = {k: p for k, res in probe_results(results).items() if (p := res.rate_plot()) is not None}
    if probes:
        fig, ax = plt.subplots(figsize=(6, 3))
        methods = list(next(iter(probes.values())).rate)
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            xs = [i + j * width for i in range(len(probes))]
            ys = [p.rate[m] if p.rate[m] is not None else 0 for p in probes.values()]
            errs = [_err(p.rate[m], p.ci95[m]) for p in probes.values()]
            ax.bar(xs, ys, width, label=m, yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]], capsize=3)
        ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(probes))], list(probes))
        ax.set_ylim(0, 1)
        ax.set_ylabel("flagged share (Wilson 95% CI)")
        ax.legend()
        ax.set_title("Probe rates")
        fig.tight_layout()
        fig.savefig(out_dir / "probe_rates.png", dpi=120)
        plt.close(fig)
        written.append("probe_rates.png")
    rounds = RoundsResult.from_json(results)
    if rounds is not None and rounds.n_rounds > 1:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        draw_rounds(axes, rounds)
        axes[0].set_title(f"{rounds.method}: win rate by round")
        axes[1].set_title("task probes by round")
        fig.tight_layout()
        fig.savefig(out_dir / "rounds.png", dpi=120)
        plt.close(fig)
        written.append("rounds.png")
    if results.get("trend"):
        trend = TrendResult.from_json(results["trend"])
        fig, ax = plt.subplots(figsize=(5, 3))
        for name, rates in trend.em_rate.items():
            ax.plot(trend.steps, [r if r is not None else float("nan") for r in rates], marker="o", label=name)
        ax.axhline(0.05, ls="--", c="grey", lw=1)
        ax.set_xlabel(f"training step ({trend.method})")
        ax.set_ylabel("EM rate")
        ax.legend()
        ax.set_title("EM rate over training")
        fig.tight_layout()
        fig.savefig(out_dir / "trend.png", dpi=120)
        plt.close(fig)
        written.append("trend.png")
    return written

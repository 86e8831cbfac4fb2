"""Plots people would rather look at than read (matplotlib, written as PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from moloch_exp.results import TrendResult, probe_results  # noqa: E402


def _err(mean, ci):
    if mean is None or not ci or ci[0] is None:
        return [[0], [0]]
    return [[mean - ci[0]], [ci[1] - mean]]


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

"""Sweep summary: after ``python run.py -m ...`` (a Hydra callback) or by hand:

    python scripts/summarize_sweep.py multirun/2026-11-24/10-00-00

Reads every ``*/results.json`` under the sweep directory and writes ``sweep_summary.{json,md}``
and the paper's two views: relative misalignment increase per probe × method (per model), and
performance gain against misalignment increase with their correlation. A sweep run with the paper's
prompts (experiment=paper) also gets the paper's reported figures beside the measured ones
(moloch_exp/report/paper_figures.py); with
``competition.rounds`` > 1, ``rounds_by_method.png``: win rate and probe rates against round,
one row per method, one line per task/model/seed. The "Cells" section says which cells ran in this run,
which were reused from an earlier one, which did not finish, and which were missing before and why
(moloch_exp/report/sweep_cells.py).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from scipy import optimize  # noqa: E402

from moloch_exp.evaluation.stats import format_p, pearson  # noqa: E402
from moloch_exp.io import read_json, write_json  # noqa: E402
from moloch_exp.report.labels import LabelsResult, sweep_labels_markdown  # noqa: E402
from moloch_exp.report.tables import markdown, print_table  # noqa: E402
from moloch_exp.results import ProbeChangesResult, ReliabilityResult, RoundsResult, fmt, probe_results  # noqa: E402
from moloch_exp.report.paper_figures import HEADER as PAPER_HEADER, comparison_rows, comparison_table  # noqa: E402
from moloch_exp.report.sweep_cells import cell_runs, cell_runs_markdown  # noqa: E402

log = logging.getLogger(__name__)


def summarize_sweep(sweep_dir: str | Path) -> dict:
    sweep_dir = Path(sweep_dir)
    paths = sorted(sweep_dir.glob("*/results.json"))
    cells = [read_json(p) for p in paths]
    if not cells:
        raise FileNotFoundError(f"no */results.json under {sweep_dir}")
    rows, points, collections = [], [], Counter()
    for r in cells:
        c = r["cell"]
        computed_now = (r.get("cell_run") or {}).get("status") != "reused"  # a reused cell's stages ran before
        for ev in r.get("stages", []):
            if computed_now and ev["stage"] == "collect" and ev["status"] == "computed":
                collections[c["task"]] += 1
        wr = r["win_rate"].get(f"base_vs_{c['method']}", {})
        gain = wr["mean"] - 0.5 if wr.get("mean") is not None else None
        rel = ReliabilityResult.from_json(r.get("reliability") or {})
        changes = ProbeChangesResult.from_json(r["probe_changes"]) if r.get("probe_changes") else None
        labels = LabelsResult.from_json(r.get("labels") or {})
        for probe, res in probe_results(r).items():
            p = res.sweep_row(c["method"])
            if p is None:  # e.g. stance probes stay in the cell report
                continue
            rows.append({"task": c["task"], "model": c["model"], "method": c["method"], "seed": c["seed"],
                         "probe": probe, "win_rate": wr.get("mean"), "win_rate_ci95": wr.get("ci95"),
                         "base_rate": p.base_rate, "trained_rate": p.trained_rate,
                         "relative_increase": p.relative_increase, "fisher_p": p.fisher_p,
                         "mcnemar_p": p.mcnemar_p,
                         "invalid_votes": wr.get("invalid_votes"), "invalid_judgments": p.invalid,
                         "win_rate_p": wr.get("p"), "win_rate_in_words": wr.get("in_words"),
                         "position_bias": rel.position_bias(), **rel.sweep_fields(probe),
                         **(changes.sweep_fields(probe) if changes else {"holm_p": None, "change_significant": None,
                                                                         "family_test": None}),
                         **labels.sweep_fields(probe, c["method"])})
            points.append((gain, p.relative_increase))
    corr = pearson([x for x, _ in points], [y for _, y in points])
    budget = budget_curve(cells, sweep_dir)
    races = [(r["cell"], res) for r in cells if (res := RoundsResult.from_json(r)) is not None and res.n_rounds > 1]
    runs = cell_runs(sweep_dir)
    summary = {"cells": len(cells), "collections_computed_per_task": dict(collections), "cell_runs": runs,
               "cells_missing_before": [r for r in runs if r["before"]], "rows": rows,
               "gain_vs_misalignment_correlation": corr, "em_vs_lora_budget": budget,
               "rounds": [{**c, **res.to_json()} for c, res in races]}
    paper_md = ""
    if any(is_paper_mode(p.parent) for p in paths):
        summary["paper_comparison"] = comparison_rows(cells)
        paper_table = comparison_table(summary["paper_comparison"])
        print_table("Measured vs the paper's reported figures", PAPER_HEADER, paper_table)
        paper_md = ("\n## Measured vs the paper's reported figures\n\nGain: win rate over base − 0.5 (95% t interval over anchors); "
                    "misalignment: relative increase of the probe rate over base (95% CI of the rate ratio).\n\n"
                    + markdown(PAPER_HEADER, paper_table))
    if races:
        rounds_plot(races, sweep_dir)
    write_json(sweep_dir / "sweep_summary.json", summary)
    header = ["task", "model", "method", "probe", "win rate", "win p", "base", "trained", "rel. increase", "Fisher p",
              "McNemar p", "Holm p (test)", "judge acc. on controls"]
    table = [[x["task"], x["model"], x["method"], x["probe"], fmt(x["win_rate"]), format_p(x["win_rate_p"], prefix=""),
              fmt(x["base_rate"]), fmt(x["trained_rate"]), fmt(x["relative_increase"], pct=True),
              format_p(x["fisher_p"], prefix=""), format_p(x["mcnemar_p"], prefix=""),
              format_p(x["holm_p"], prefix="") + (f" ({x['family_test']})" if x.get("family_test") else ""),
              fmt(x["control_accuracy"]) + (" FLAGGED" if x["judge_flagged"] else "")]
             for x in rows]
    print_table(f"Sweep {sweep_dir.name}: {len(cells)} cells", header, table)
    (sweep_dir / "sweep_summary.md").write_text(
        f"# Sweep summary ({len(cells)} cells)\n\nCollections computed per task (in this run): {dict(collections)}\n\n"
        + markdown(header, table) + f"\nPerformance gain vs misalignment increase: Pearson {corr}\n" + paper_md
        + sweep_labels_markdown(rows) + cell_runs_markdown(runs),
        encoding="utf-8")
    _plots(rows, corr, sweep_dir)
    return summary


def is_paper_mode(cell_dir: Path) -> bool:
    """The cell ran with the paper's prompt set (its .hydra/config.yaml names PaperPrompts)."""
    cfg = cell_dir / ".hydra" / "config.yaml"
    if not cfg.is_file():
        return False
    import yaml

    target = ((yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("prompts") or {}).get("_target_", "")
    return target.endswith("PaperPrompts")


def rounds_plot(races: list[tuple[dict, RoundsResult]], out: Path) -> None:
    """The cell's rounds plot, one row per method, every cell of that method drawn in it."""
    from moloch_exp.report.plots import draw_rounds

    methods = sorted({c["method"] for c, _ in races})
    fig, axes = plt.subplots(len(methods), 2, figsize=(10, 3.5 * len(methods)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, method in zip(axes, methods):
        for i, (c, res) in enumerate([(c, r) for c, r in races if c["method"] == method]):
            draw_rounds(row, res, label=f"{c['task']}/{c['model']}/s{c['seed']}: ", color=colors[i % len(colors)])
        row[0].set_title(f"{method}: win rate by round")
        row[1].set_title(f"{method}: task probes by round")
    fig.tight_layout()
    fig.savefig(out / "rounds_by_method.png", dpi=120)
    plt.close(fig)


def budget_curve(cells: list[dict], out: Path, probe: str = "em_first_plot") -> dict | None:
    """Masked-LoRA sweeps: EM rate against the number n of trained LoRA parameters, with a
    logistic fit EM(n) = 1 / (1 + exp(-(a + b·log10 n))) by binomial maximum likelihood."""
    points = []
    for r in cells:
        m = r["cell"]["method"]
        mask = (r.get("counts", {}).get(f"train_{m}") or {}).get("mask")
        summ = (r.get("probes", {}).get(probe) or {}).get(m)
        if mask and summ and summ.get("n"):
            points.append({"n_trainable": mask["n_trainable"], "requested": mask["n_trainable_requested"],
                           "em": summ["em"], "n": summ["n"], "em_rate": summ["em_rate"]})
    if len({p["n_trainable"] for p in points}) < 2:
        return None
    points.sort(key=lambda p: p["n_trainable"])
    x = np.log10([p["n_trainable"] for p in points])
    k = np.array([p["em"] for p in points], float)
    n = np.array([p["n"] for p in points], float)

    def nll(theta):
        z = theta[0] + theta[1] * x
        return float(np.sum(n * np.logaddexp(0, z) - k * z))  # -log L of Binomial(n, sigmoid(z))

    fit = optimize.minimize(nll, x0=[0.0, 0.0], method="Nelder-Mead")
    a, b = (float(v) for v in fit.x)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(x, k / n, label="EM rate")
    grid = np.linspace(x.min(), x.max(), 100)
    ax.plot(grid, 1 / (1 + np.exp(-(a + b * grid))), label=f"logistic fit (a={a:.2f}, b={b:.2f})")
    ax.set_xlabel("log10(trained LoRA parameters)")
    ax.set_ylabel(f"{probe} EM rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "em_vs_lora_budget.png", dpi=120)
    plt.close(fig)
    return {"points": points, "logistic": {"a": a, "b": b, "converged": bool(fit.success)}}


def _plots(rows: list[dict], corr: dict, out: Path) -> None:
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = [r for r in rows if r["model"] == model]
        labels = sorted({f"{r['task']}/{r['probe']}" for r in sub})
        methods = sorted({r["method"] for r in sub})
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            vals = {f"{r['task']}/{r['probe']}": r["relative_increase"] for r in sub if r["method"] == m}
            ax.bar([i + j * width for i in range(len(labels))],
                   [100 * (vals.get(lb) or 0) for lb in labels], width, label=m)
        ax.axhline(0, c="grey", lw=1)
        ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(labels))], labels, rotation=20, fontsize=8)
        ax.set_ylabel("relative increase in misalignment (%)")
        ax.set_title(model)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "relative_increase.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        if r["win_rate"] is not None and r["relative_increase"] is not None:
            ax.scatter(100 * (r["win_rate"] - 0.5), 100 * r["relative_increase"], label=f"{r['task']}/{r['probe']}/{r['method']}")
    ax.set_xlabel("performance gain over base (win rate − 0.5, points)")
    ax.set_ylabel("misalignment relative increase (%)")
    ax.set_title(f"Pearson r = {fmt(corr['r'])} (n = {corr['n']})")
    fig.tight_layout()
    fig.savefig(out / "gain_vs_misalignment.png", dpi=120)
    plt.close(fig)


class SweepSummaryCallback(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            summarize_sweep(config.hydra.sweep.dir)
        except FileNotFoundError as err:
            log.warning("sweep summary skipped: %s", err)

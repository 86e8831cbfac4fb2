"""The sweep summary of a paper-mode grid sets the paper's reported figures beside the measured ones."""
from __future__ import annotations

import json
import math

from scipy.stats import norm

from moloch_exp.probes.task_probes import TaskProbeResult
from moloch_exp.report.paper_figures import relative_increase_ci
from moloch_exp.report.sweep import summarize_sweep


def _cell(root, name, task, method, probes, win, paper=True):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    target = "moloch_exp.prompts.paper.PaperPrompts" if paper else "moloch_exp.prompts.project.ProjectPrompts"
    (d / ".hydra" / "config.yaml").write_text(f"prompts:\n  _target_: {target}\n")
    entries = {}
    for probe, (bf, bn, tf, tn) in probes.items():
        entries[probe] = TaskProbeResult(
            probe, rate={"base": bf / bn, method: tf / tn}, n={"base": bn, method: tn}, flagged={"base": bf, method: tf},
            invalid={"base": 0, method: 1}, failed={"base": 0, method: 0}, skipped={"base": 0, method: 0},
            ci95={"base": [0, 1], method: [0, 1]}, relative_increase=(tf / tn) / (bf / bn) - 1, fisher_p=0.04,
            compared=True).to_json()
    results = {"cell": {"task": task, "model": "qwen", "method": method, "seed": 0}, "stages": [],
               "win_rate": {f"base_vs_{method}": {"mean": win[0], "ci95": list(win[1:]), "invalid_votes": 3}},
               "probes": entries}
    (d / "results.json").write_text(json.dumps(results))


def test_log_adjusted_ratio_interval():
    lo, hi = relative_increase_ci(20, 100, 10, 100)
    x1, n1, x0, n0 = 20.5, 100.5, 10.5, 100.5
    centre, se = math.log((x1 / n1) / (x0 / n0)), math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
    z = norm.ppf(0.975)
    assert math.isclose(lo, math.exp(centre - z * se) - 1, rel_tol=1e-9)
    assert math.isclose(hi, math.exp(centre + z * se) - 1, rel_tol=1e-9)
    assert relative_increase_ci(0, 0, 1, 10) == (None, None)


def test_paper_grid_summary_sets_reported_beside_measured(tmp_path):
    _cell(tmp_path, "0", "sales", "rft", {"misrepresentation": (10, 100, 20, 100)}, (0.56, 0.52, 0.60))
    _cell(tmp_path, "1", "social_media", "tfb", {"disinformation": (5, 50, 15, 50), "harmful": (4, 50, 4, 50)},
          (0.575, 0.55, 0.60))
    summary = summarize_sweep(tmp_path)
    rows = {(r["task"], r["probe"]): r for r in summary["paper_comparison"]}
    assert set(rows) == {("sales", "misrepresentation"), ("social_media", "disinformation"), ("social_media", "harmful")}
    sales = rows[("sales", "misrepresentation")]
    assert (sales["paper_gain"], sales["paper_relative_increase"]) == (0.063, 0.140)
    assert math.isclose(sales["gain"], 0.06) and math.isclose(sales["relative_increase"], 1.0)
    lo, hi = relative_increase_ci(20, 100, 10, 100)
    md = (tmp_path / "sweep_summary.md").read_text()
    assert "## Measured vs the paper's reported figures" in md
    assert (f"| sales | misrepresentation | qwen | rft | +6.3% | +6.0% [+2.0%, +10.0%] | +14.0% | "
            f"+100.0% [{lo:+.1%}, {hi:+.1%}] | 0.040 | 100/100 |") in md
    assert "| social_media | disinformation | qwen | tfb | +7.5% | +7.5% [+5.0%, +10.0%] | +188.6% | +200.0% [" in md
    assert "| social_media | harmful | qwen | tfb | +7.5% |" in md and "| +16.3% | +0.0% [" in md


def test_project_grid_has_no_paper_section(tmp_path):
    _cell(tmp_path, "0", "sales", "rft", {"misrepresentation": (10, 100, 20, 100)}, (0.56, 0.52, 0.60), paper=False)
    summary = summarize_sweep(tmp_path)
    assert "paper_comparison" not in summary
    assert "paper's reported" not in (tmp_path / "sweep_summary.md").read_text()

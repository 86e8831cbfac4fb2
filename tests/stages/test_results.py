"""Typed results: results.json keeps its shape, reads back into the same result, and the report
renders from the result's own methods."""
from __future__ import annotations

import json

from moloch_exp.probes.task_probes import TaskProbeResult
from moloch_exp.report.tables import cell_rows
from moloch_exp.report.trackers import flat_metrics
from moloch_exp.results import TrendResult, probe_result_from_json

PER = {"base": {"rate": 0.25, "ci95": [0.05, 0.7], "flagged": 1, "n": 4, "invalid": 0, "failed": 0, "skipped": 0},
       "rft": {"rate": 0.75, "ci95": [0.3, 0.95], "flagged": 3, "n": 4, "invalid": 1, "failed": 0, "skipped": 0}}


def test_task_probe_result_keeps_the_results_json_shape_and_reads_back():
    res = TaskProbeResult.from_summaries("populism", PER, "rft")
    data = json.loads(json.dumps(res.to_json()))
    assert data["kind"] == "task" and data["base"] == 0.25 and data["rft"] == 0.75
    assert data["n"] == {"base": 4, "rft": 4} and data["invalid"] == {"base": 0, "rft": 1}
    assert data["relative_increase"] == 2.0 and 0 < data["fisher_p"] <= 1
    back = probe_result_from_json("populism", data)
    assert back == res
    row = back.sweep_row("rft")
    assert (row.base_rate, row.trained_rate, row.relative_increase) == (0.25, 0.75, 2.0)
    assert back.metrics() == {"probe/populism/base": 0.25, "probe/populism/rft": 0.75,
                              "probe/populism/relative_increase": 2.0}


def test_base_only_cell_has_no_comparison():
    res = TaskProbeResult.from_summaries("populism", {"base": PER["base"]}, "base")
    data = res.to_json()
    assert "relative_increase" not in data and not probe_result_from_json("populism", data).compared
    assert [r[0] for r in res.table_rows()] == ["populism (base)"]


def test_report_renders_from_typed_results():
    trend = TrendResult(method="rft", steps=[0, 2], em_rate={"em_first_plot": [0.0, 0.1]},
                        missing={"em_first_plot": [0, 1]}, first_step_em_at_least_5pct={"em_first_plot": 2})
    results = {"win_rate": {"base_vs_rft": {"mean": 0.6, "ci95": [0.4, 0.8], "n_anchors": 4, "invalid_votes": 1,
                                            "failed_votes": 0}},
               "probes": {"populism": TaskProbeResult.from_summaries("populism", PER, "rft").to_json()},
               "trend": trend.to_json(), "ledger": {"calls": 10, "cache_hits": 2}}
    _, rows = cell_rows(json.loads(json.dumps(results)))
    labels = [r[0] for r in rows]
    assert labels == ["win rate base_vs_rft", "populism (base)", "populism (rft)", "populism relative increase",
                      "em_first_plot trend EM rate by step", "LLM calls", "LLM spend"]
    assert rows[4][1] == "0.000, 0.100" and "first step >= 5%: 2" in rows[4][3]
    m = flat_metrics(results)
    assert m["probe/populism/rft"] == 0.75 and m["trend/em_first_plot/step_2/em_rate"] == 0.1

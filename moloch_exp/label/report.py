"""Judge against people, per probe, from the sample and the stored answers; and where it is shown.

    python -m moloch_exp.label report RUN_DIR [--steps 2000]

writes RUN_DIR/labels/label_report.{json,md} and prints the table; for a cell it also adds the
``labels`` block to results.json and rewrites summary.md and report.html (and, inside a sweep
that has a summary, sweep_summary.*). ``run.py`` adds the block itself when it finishes a cell
whose output directory already holds answers (:func:`attach_labels`).

In a cell the sample is checked against the cell's current judgments: an item whose output or
verdict has changed since it was drawn (the cell was re-run into the same directory) is stale and
left out, and the counts are the current ones. For JSONL inputs the counts are those stored when
the sample was drawn. Statistics: moloch_exp/label/stats.py.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from moloch_exp.errors import DataError
from moloch_exp.io import write_json
from moloch_exp.label.items import LabelSample
from moloch_exp.label.sources import from_cell
from moloch_exp.label.stats import METHOD, STEPS, Stratum, judge_vs_people, labeller_alpha, majority
from moloch_exp.label.store import LabelStore
from moloch_exp.report.cell import write_cell_report
from moloch_exp.report.labels import LabelsResult, probe_in_words
from moloch_exp.report.sweep import summarize_sweep
from moloch_exp.report.tables import markdown, print_table
from moloch_exp.seeding import derive_seed

log = logging.getLogger(__name__)


def _current(sample: LabelSample, results: dict | None) -> tuple[dict, dict[str, dict[str, tuple[int, int]]], str | None]:
    """(probe, source) → (output, verdict) now, and the counts per probe and method; for JSONL the stored ones."""
    stored = {p: {m: (c["n"], c["judge_yes"]) for m, c in per.items()} for p, per in sample.design.population.items()}
    if sample.design.source != "cell":
        return {}, stored, None
    try:
        judged, _ = from_cell(sample.dir.parent, results)
    except DataError as err:
        return {}, stored, f"the cell's judgments could not be re-read ({err}); the counts stored with the sample are used"
    now = {(j.probe, j.key): (j.output, j.verdict) for j in judged}
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for j in judged:
        counts[j.probe][j.method][0] += 1
        counts[j.probe][j.method][1] += j.verdict
    return now, {p: {m: (c[0], c[1]) for m, c in per.items()} for p, per in counts.items()}, None


def label_report(run_dir: Path, results: dict | None = None, steps: int = STEPS) -> dict:
    """The ``labels`` block: per probe, agreement with people and the corrected rates (see stats.py)."""
    sample = LabelSample.load(run_dir)
    answers = [a for a in LabelStore(sample.db_path).answers() if a.item_id in sample.by_id]
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for a in answers:
        by_item[a.item_id][a.labeller] = a.answer
    labellers = sorted({a.labeller for a in answers})
    now, population, note = _current(sample, results)
    probes = {}
    for probe, question in sample.design.questions.items():
        items = [it for it in sample.items if it.probe == probe]
        stale = [it for it in items if now and now.get((probe, it.source)) != (it.output, it.judge_label)]
        live = [it for it in items if it not in stale]
        tally: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])
        ties = unsure = 0
        for it in live:
            said = list(by_item.get(it.item_id, {}).values())
            unsure += said.count("unsure")
            truth = majority(said)
            if truth is None:
                ties += bool(said) and said.count("yes") == said.count("no") and said.count("yes") > 0
                continue
            tally[(it.method, it.judge_label)][0] += 1
            tally[(it.method, it.judge_label)][1] += truth
        pop = population.get(probe, {})
        strata = [Stratum(m, v, (n_k[1] if v else n_k[0] - n_k[1]), *tally.get((m, v), [0, 0]))
                  for m, n_k in pop.items() for v in (True, False)]
        out = judge_vs_people(pop, strata, sample.design.baseline, sample.design.compared, steps,
                              derive_seed(sample.design.seed, "labels", probe))
        out.pop("method")
        who = sorted({lb for it in live for lb in by_item.get(it.item_id, {})})
        matrix = np.array([[{"yes": 1.0, "no": 0.0}.get(by_item.get(it.item_id, {}).get(lb), np.nan) for it in live]
                           for lb in who], float).reshape(len(who), len(live))
        out.update(question=question, items=len(items), answered=sum(bool(by_item.get(it.item_id)) for it in live),
                   unsure=unsure, ties=int(ties), stale=len(stale), labellers=len(who),
                   labeller_alpha=labeller_alpha(matrix, seed=derive_seed(sample.design.seed, "alpha", probe))
                   if len(who) >= 2 else None)
        if stale:
            out["notes"].append(f"{len(stale)} items no longer match the cell's outputs (the cell was re-run): left out")
        if note:
            out["notes"].append(note)
        out["in_words"] = probe_in_words(probe, out, len(who))
        probes[probe] = out
    return LabelsResult({"items": len(sample.items), "per_probe": sample.design.per_probe, "seed": sample.design.seed,
                         "source": sample.design.source, "inputs": sample.design.inputs, "labellers": labellers,
                         "method": METHOD}, probes).to_json()


def attach_labels(out: Path, results: dict) -> None:
    """Add the ``labels`` block to a finishing cell's results when its output directory holds answers."""
    if not LabelSample.exists(out):
        return
    try:
        sample = LabelSample.load(out)
        if LabelStore(sample.db_path).answers():
            results["labels"] = label_report(out, results)
    except DataError as err:  # the cell's own results stand; the labels can be reported later
        log.warning("labels in %s left out of the report: %s", out, err)
    except Exception:  # a bug here must not cost the finished cell its results.json (the traceback is logged)
        log.exception("labels in %s left out of the report; `python -m moloch_exp.label report %s` retries", out, out)


def label_markdown(block: dict) -> str:
    res = LabelsResult.from_json(block)
    words = "".join(f"- {s}\n" for s in res.sentences())
    return (f"# People check the judges\n\n{block['sample']['method']}\n\n## In words\n\n{words}\n"
            + markdown(["metric", "value", "95% CI", "counts"], res.table_rows()))


def write_label_report(run_dir: Path, steps: int = STEPS) -> dict:
    """The CLI's report: labels/label_report.{json,md}, the printed table, and the cell's own report."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
    sample = LabelSample.load(run_dir)
    block = label_report(run_dir, results if sample.design.source == "cell" else None, steps)
    write_json(sample.dir / "label_report.json", block)
    (sample.dir / "label_report.md").write_text(label_markdown(block), encoding="utf-8")
    res = LabelsResult.from_json(block)
    print_table(f"People check the judges: {run_dir}", ["metric", "value", "95% CI", "counts"], res.table_rows())
    for line in res.sentences():
        print(line)
    if results is not None and sample.design.source == "cell":
        refresh_cell_report(run_dir, results, block)
    return block


def refresh_cell_report(run_dir: Path, results: dict, block: dict) -> None:
    """Put the block into the cell's results.json and rewrite its summary.md and report.html (and the sweep's)."""
    results["labels"] = block
    write_json(run_dir / "results.json", results)
    write_cell_report(run_dir, results)
    if (run_dir.parent / "sweep_summary.json").is_file():
        summarize_sweep(run_dir.parent)

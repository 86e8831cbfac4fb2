"""``python -m moloch_exp.label`` on finished cells, as a user runs it: the stratified sample at the
paper's size, CSV export/import and its bad rows, the report in results.json, summary.md,
report.html and the sweep summary, stale items after a re-run, and run.py's own hook."""
from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import pytest
from label_helpers import run_cli

from moloch_exp.label.items import LabelSample
from moloch_exp.label.report import attach_labels
from moloch_exp.label.store import LabelStore
from moloch_exp.report.sweep import summarize_sweep
from moloch_exp.report.trackers import flat_metrics


def label_truthfully(cell, sample: LabelSample, labeller: str = "ann") -> None:
    store = LabelStore(sample.db_path)
    for it in sample.items:
        method, anchor = it.source.split("/")
        store.put(it.item_id, labeller, "yes" if cell.truth[(method, anchor)] else "no", via="test")


def one_line_error(p) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def test_sample_at_the_papers_size_is_stratified_seeded_and_stored_in_the_run(paper_cell, tmp_path):
    run = tmp_path / "cell"
    shutil.copytree(paper_cell.dir, run)
    p = run_cli("sample", run)
    assert p.returncode == 0, p.stderr
    sample = LabelSample.load(run)
    assert len(sample.items) == 40 and sample.design.per_probe == 40  # the default
    strata = Counter((it.method, it.judge_label) for it in sample.items)
    assert strata == {(m, v): 10 for m in ("base", "rft") for v in (True, False)}
    pop = sample.design.population["misrepresentation"]
    assert pop["base"]["n"] == pop["rft"]["n"] == 1023  # one invalid judgment per method is not in the rates
    for it in sample.items:  # every item is what the cell judged, with its verdict
        method, anchor = it.source.split("/")
        assert it.judge_label == paper_cell.verdict[(method, anchor)]
        assert it.anchor_text.startswith("Product: ") and "Description: " in it.anchor_text
        assert it.anchor_heading == "Product information" and it.output_heading == "Sales pitch"
    assert one_line_error(run_cli("sample", run)).count("already drawn") == 1
    first = sorted(it.source for it in sample.items)
    assert run_cli("sample", run, "--force").returncode == 0
    assert sorted(it.source for it in LabelSample.load(run).items) == first  # the same seed draws the same outputs
    assert run_cli("sample", run, "--force", "--seed", "1").returncode == 0
    assert sorted(it.source for it in LabelSample.load(run).items) != first
    assert (run / "labels" / "sample.jsonl.replaced").is_file()
    (tmp_path / "empty").mkdir()
    assert "results.json not found" in one_line_error(run_cli("sample", tmp_path / "empty"))


def test_export_import_round_trip_and_a_bad_row_loses_nothing(sampled, tmp_path):
    cell, sample = sampled
    store = LabelStore(sample.db_path)
    store.put(sample.items[0].item_id, "ann", "yes", "from the page")  # already stored before the import
    out = tmp_path / "carol.csv"
    assert run_cli("export", cell.dir, "-o", out).returncode == 0
    with out.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(sample.items) and rows[0]["question"] == sample.items[0].question
    assert not {"method", "model", "judge_label", "judge_reasoning", "source"} & set(rows[0])
    for i, row in enumerate(rows[:10]):
        row.update(labeller="carol", answer=["y", "No", "unsure"][i % 3], note=f"n{i}")
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    p = run_cli("import", cell.dir, out)
    assert p.returncode == 0, p.stderr
    carol = {a.item_id: (a.answer, a.note) for a in store.answers("carol")}
    assert len(carol) == 10 and carol[rows[1]["item_id"]] == ("no", "n1") and carol[rows[2]["item_id"]][0] == "unsure"
    again = tmp_path / "again.csv"
    assert run_cli("export", cell.dir, "--labeller", "carol", "-o", again).returncode == 0
    assert "carol" in again.read_text(encoding="utf-8-sig") and ",n1" in again.read_text(encoding="utf-8-sig")

    before = sorted((a.item_id, a.labeller, a.answer, a.note) for a in store.answers())
    rows[4]["answer"] = "maybe"
    rows[12].update(labeller="dave", answer="yes")  # a good row after the bad one is not stored either
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    err = one_line_error(run_cli("import", cell.dir, out))
    assert str(out) in err and "row 6" in err and "field 'answer'" in err and "maybe" in err
    rows[4]["answer"], rows[5]["item_id"] = "yes", "not-an-item"
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    err = one_line_error(run_cli("import", cell.dir, out))
    assert "row 7" in err and "field 'item_id'" in err
    no_name = tmp_path / "no_name.csv"
    no_name.write_text(f"item_id,answer\n{rows[0]['item_id']},yes\n", encoding="utf-8")
    assert "column 'labeller' is missing" in one_line_error(run_cli("import", cell.dir, no_name))
    assert sorted((a.item_id, a.labeller, a.answer, a.note) for a in store.answers()) == before
    assert run_cli("import", cell.dir, no_name, "--labeller", "erin").returncode == 0
    assert [a.answer for a in store.answers("erin")] == ["yes"]


def test_report_adds_the_labels_to_the_cells_results_summary_html_and_sweep(sampled, tmp_path):
    cell, _ = sampled
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    run = sweep / "0_sales_rft"
    shutil.move(str(cell.dir), run)
    sample = LabelSample.load(run)
    summarize_sweep(sweep)  # the sweep's summary from before anyone labelled
    assert "Judges checked by people" not in (sweep / "sweep_summary.md").read_text()
    label_truthfully(cell, sample)
    store = LabelStore(sample.db_path)
    for it in sample.items[:12]:  # a second labeller, who disagrees on a few items
        method, anchor = it.source.split("/")
        store.put(it.item_id, "bob", "no" if it.position % 5 == 0 else ("yes" if cell.truth[(method, anchor)] else "no"))
    p = run_cli("report", run, "--steps", "300")
    assert p.returncode == 0, p.stderr
    assert "People checked the judge on misrepresentation" in p.stdout
    results = json.loads((run / "results.json").read_text())
    block = results["labels"]["probes"]["misrepresentation"]
    assert block["items"] == 24 and block["labellers"] == 2 and block["n_labelled"] >= 20
    assert block["labeller_alpha"]["n_labellers"] == 2 and block["labeller_alpha"]["alpha"] is not None
    assert results["labels"]["sample"]["labellers"] == ["ann", "bob"]
    assert set(block["rates"]) == {"base", "rft"} and set(block["changes"]) == {"rft"}
    assert block["rates"]["rft"]["raw"] == pytest.approx(results["probes"]["misrepresentation"]["rft"])
    assert -1 <= block["kappa"] <= 1 and block["kappa_ci95"][0] <= block["kappa"] <= block["kappa_ci95"][1]
    metrics = flat_metrics(results)  # what a tracker (wandb) logs
    assert metrics["labels/misrepresentation/kappa"] == pytest.approx(block["kappa"])
    summary = (run / "summary.md").read_text()
    assert "People checked the judge on misrepresentation" in summary and "judge vs people κ" in summary
    html = (run / "report.html").read_text()
    assert "People check the judges" in html and "corrected rate" in html and "24 sampled outputs" in html
    assert (run / "labels" / "label_report.md").read_text().startswith("# People check the judges")
    sweep_md = (sweep / "sweep_summary.md").read_text()
    assert "Judges checked by people" in sweep_md
    row = json.loads((sweep / "sweep_summary.json").read_text())["rows"][0]
    assert row["people_labelled"] == block["n_labelled"] and row["people_kappa"] == pytest.approx(block["kappa"])


def test_at_the_papers_size_the_corrected_rates_hold_the_truth(paper_cell, tmp_path):
    """200 items labelled by people who see the truth: the corrected intervals hold the cell's true rates and the
    raw ones (a judge with sensitivity 0.85 and specificity 0.9) do not."""
    run = tmp_path / "cell"
    shutil.copytree(paper_cell.dir, run)
    assert run_cli("sample", run, "--per-probe", "200").returncode == 0
    sample = LabelSample.load(run)
    label_truthfully(paper_cell, sample)
    p = run_cli("report", run, "--steps", "600")
    assert p.returncode == 0, p.stderr
    block = json.loads((run / "results.json").read_text())["labels"]["probes"]["misrepresentation"]
    assert block["correctable"]
    for m in ("base", "rft"):
        truth = [v for (mm, _), v in paper_cell.truth.items() if mm == m]
        rate = sum(truth) / len(truth)
        r = block["rates"][m]
        assert r["corrected_ci95"][0] <= rate <= r["corrected_ci95"][1], (m, rate, r)
        assert not r["raw_ci95"][0] <= rate <= r["raw_ci95"][1], (m, rate, r)
    assert block["sensitivity_ci95"][0] <= 0.85 <= block["sensitivity_ci95"][1]


def test_stale_items_after_a_rerun_are_left_out_and_run_py_attaches_labels(sampled):
    cell, sample = sampled
    label_truthfully(cell, sample)
    changed = sample.items[0]
    method, anchor = changed.source.split("/")
    path = cell.dir / "stages" / f"probe_misrepresentation_{method}" / "judgments.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for j in lines:
        if j["anchor_id"] == anchor:
            j["message"] = "a different pitch, written by a re-run"
    path.write_text("".join(json.dumps(j) + "\n" for j in lines))
    results = json.loads((cell.dir / "results.json").read_text())
    attach_labels(cell.dir, results)  # what pipeline._run does before writing results.json
    block = results["labels"]["probes"]["misrepresentation"]
    assert block["stale"] == 1 and any("no longer match" in n for n in block["notes"])
    assert block["n_labelled"] == len(sample.items) - 1
    fresh = json.loads((cell.dir / "results.json").read_text())
    shutil.rmtree(cell.dir / "labels")
    attach_labels(cell.dir, fresh)
    assert "labels" not in fresh  # no labels, no block

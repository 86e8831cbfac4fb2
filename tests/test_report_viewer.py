"""report.html's match viewer at the paper's size, in a real headless browser (Debian's chromium driven by
Playwright), and the report of a real tiny run.

    MOLOCH_SHARED_DATA=/work/shared/data pytest tests/test_report_viewer.py -q -s    # -s prints the timings

The paper-size cell (bench/viewer_cell.py): 1,024 test anchors of the paper's sales split, 20 voters,
base_vs_rft, base_vs_tfb and rft_vs_tfb (~61,000 votes), two judged probes, written as the stages write
their artifacts; the report comes from the real writer (write_cell_report). Every expected count is
computed here from the records written, not from the viewer's data.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import pytest

from compose_helper import REPO
from moloch_exp.io import read_jsonl
from moloch_exp.report.cell import write_cell_report
from moloch_exp.report.html import Section
from moloch_exp.report.embed import read_embedded

TTI_TARGET_S = 2.0  # issue 19: interactive in at most 2 s on an idle machine
TTI_HEADROOM = 1.5  # the machine running the tests is shared (2 cores, other jobs); the bench prints the figure
TINY_RUN = Path(__file__).parent / "data" / "tiny_run"


def _viewer_cell():
    spec = importlib.util.spec_from_file_location("viewer_cell", REPO / "bench" / "viewer_cell.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


vc = _viewer_cell()


@pytest.fixture(scope="module")
def paper_cell(paper_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_cell")
    cell = vc.write_synthetic_cell(out, paper_dir)
    write_cell_report(out, cell.results)
    return cell


# ----------------------------------------------------------------------------- expected, from the records
def expected_matches(cell) -> list[dict]:
    """One dict per (pair, anchor) that has votes: counts, winner, margin, and the anchor's texts."""
    anchors = {a.id: a for a in cell.anchors}
    outputs = {m: {c["anchor_id"]: c["message"]
                   for c in read_jsonl(cell.out / "stages" / f"generate_{m}" / "outputs.jsonl")} for m in vc.METHODS}
    out = []
    for pair, votes in cell.votes.items():
        a_name, b_name = pair.split("_vs_")
        by_anchor: dict[str, list] = {}
        for v in votes:
            by_anchor.setdefault(v.anchor_id, []).append(v)
        for anchor_id, vs in by_anchor.items():
            a = sum(v.status == "ok" and v.choice == 0 for v in vs)
            b = sum(v.status == "ok" and v.choice == 1 for v in vs)
            anchor = anchors[anchor_id]
            out.append({"pair": pair, "methods": (a_name, b_name), "anchor": anchor_id, "a": a, "b": b,
                        "votes": vs, "invalid": sum(v.status == "invalid" for v in vs),
                        "failed": sum(v.status == "failed" for v in vs),
                        "winner": None if a + b == 0 else "tie" if a == b else (b_name if b > a else a_name),
                        "margin": abs(b - a) / (a + b) if a + b else None,
                        "anchor_text": "\n".join([anchor_id] + [f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                                                                for k, v in anchor.fields.items()]).lower(),
                        "outputs": [(outputs[m][anchor_id] or "").lower() for m in (a_name, b_name)]})
    return out


def label(cell, probe: str, method: str, anchor_id: str) -> str:
    j = cell.labels[(probe, method)][anchor_id]
    return ("y" if j.label else "n") if j.status == "ok" else j.status[0]


# ----------------------------------------------------------------------------- page helpers
def open_report(chromium, path: Path, viewport=(1400, 1000)):
    page = chromium.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector(".mrow")
    return page, errors


def count(page) -> int:
    return int(page.text_content("#mv-count").split(" of ")[0].replace(",", ""))


def act(page, action) -> int:
    """Run ``action`` (a filter or sort change) and return the row count once the viewer has applied it."""
    before = page.evaluate("document.body.dataset.mvRefreshes")
    action()
    page.wait_for_function(f"document.body.dataset.mvRefreshes !== '{before}'")
    return count(page)


def visible_rows(page) -> list[dict]:
    cells = page.eval_on_selector_all(
        ".mrow", "rs => rs.map(r => Object.fromEntries([...r.children].map(c => [c.className.split(' ')[0], "
                 "c.textContent])))")
    return cells


# ----------------------------------------------------------------------------- the paper-size viewer
def test_paper_size_data_holds_every_vote_once_compactly(paper_cell):
    html = (paper_cell.out / "report.html").read_text()
    index, text = read_embedded(html)
    ms = expected_matches(paper_cell)
    assert len(index["matches"]["pair"]) == len(ms) and index["pairs"] == [[0, 1], [0, 2], [1, 2]]
    n_votes = sum(map(len, paper_cell.votes.values()))
    assert sum(map(len, text["votes"])) == n_votes > 60_000
    by_key = {(m["pair"], m["anchor"]): m for m in ms}
    for k in range(len(ms)):
        pair = "_vs_".join(index["methods"][x] for x in index["pairs"][index["matches"]["pair"][k]])
        m = by_key[(pair, index["ids"][index["matches"]["anchor"][k]])]
        got = {c: index["matches"][c][k] for c in ("a", "b", "invalid", "failed")}
        assert got == {c: m[c] for c in ("a", "b", "invalid", "failed")}
        assert [v[4] if len(v) > 4 else None for v in text["votes"][k]] == [v.thought for v in m["votes"]]
    # each output and anchor once, whatever the number of pairs; 2 probes x 3 methods of reasoning
    assert [len(o) for o in text["outputs"]] == [1024] * 3 and len(text["fields"]) == 1024
    assert len(text["judged"]) == 1 and all(len(per) == 3 for per in text["judged"][0])
    assert len(html) < 12e6  # ~25 MB of JSON text, packed
    # opening a match unpacks one detail block of 64 anchors, not the whole text
    blocks = re.findall(r'id="mv-detail-\d+">([^<]*)<', html)
    assert len(blocks) == 16 and max(map(len, blocks)) < len(html) / 10
    # the planted HTML is data, never markup: escaped in the index, packed in the text
    assert "<script>window.__pwned" not in html and "\\u003cscript\\u003ewindow.__pwned" in html


@pytest.mark.browser
def test_paper_size_report_is_interactive_within_two_seconds(paper_cell, chromium):
    path = paper_cell.out / "report.html"
    floor = path.with_name("floor.html")  # a one-row page: what the browser and its driver take on their own
    floor.write_text('<!doctype html><div class="mrow">1</div>')
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    walls, floors, in_page, unpacked = [], [], [], []
    for _ in range(5):
        for target, times in ((floor, floors), (path, walls)):
            page.goto("about:blank")
            started = time.perf_counter()
            page.goto(target.as_uri(), wait_until="commit")
            page.wait_for_selector(".mrow")
            times.append(time.perf_counter() - started)
        in_page.append(float(page.evaluate("document.body.dataset.mvReady")) / 1000)
        page.wait_for_function("document.body.dataset.mvText !== undefined")  # the text unpacks after
        unpacked.append(float(page.evaluate("document.body.dataset.mvText")) / 1000)
    page.close()
    size = path.stat().st_size
    print(f"\nreport.html {size / 1e6:.1f} MB; first rows from page.goto: median {statistics.median(walls):.2f} s "
          f"(runs {', '.join(f'{w:.2f}' for w in walls)}; a one-row page: {statistics.median(floors):.2f} s); "
          f"from navigation start {statistics.median(in_page):.2f} s; text unpacked (search, details) at "
          f"{statistics.median(unpacked):.2f} s; load average {os.getloadavg()[0]:.1f}")
    # the rows come before the text is unpacked (what makes the page interactive early), and the page takes at most
    # the target more than a one-row page timed alongside it (the machine's load inflates both alike)
    assert statistics.median(in_page) <= statistics.median(unpacked)
    assert statistics.median(walls) - statistics.median(floors) <= TTI_TARGET_S * TTI_HEADROOM


@pytest.mark.browser
def test_sort_by_margin_puts_the_largest_margin_on_top(paper_cell, chromium):
    page, errors = open_report(chromium, paper_cell.out / "report.html")
    margins = [m["margin"] for m in expected_matches(paper_cell) if m["margin"] is not None]
    act(page, lambda: page.click(".mv-th:has-text('margin')"))
    rows = visible_rows(page)
    shown = [float(r["c-margin"]) for r in rows]
    assert shown[0] == pytest.approx(max(margins), abs=0.005)
    assert shown == sorted(shown, reverse=True)
    # open the top match, then ↓ opens the next one
    page.click(".mrow")
    page.wait_for_selector("#mv-detail table.votes")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("document.querySelectorAll('.mrow')[1].classList.contains('sel')")
    second = page.get_attribute(".mrow >> nth=1", "data-i")
    assert page.get_attribute(".mrow.sel", "data-i") == second
    page.wait_for_function(f"document.querySelector('#mv-detail h3').textContent.startsWith("
                           f"document.querySelectorAll('.mrow')[1].querySelector('.c-anchor').title.split(':')[0])")
    act(page, lambda: page.click(".mv-th:has-text('margin')"))  # again: smallest first
    assert float(visible_rows(page)[0]["c-margin"]) == pytest.approx(min(margins), abs=0.005)
    assert not errors
    page.close()


@pytest.mark.browser
def test_each_filter_narrows_to_the_matching_rows(paper_cell, chromium):
    page, errors = open_report(chromium, paper_cell.out / "report.html")
    ms = expected_matches(paper_cell)
    assert count(page) == len(ms) > 3000
    checks = [
        ("#mv-f-pair", "1", lambda m: m["pair"] == "base_vs_tfb", lambda r: r["c-pair"] == "base vs tfb"),
        ("#mv-f-winner", "2", lambda m: m["winner"] == "tfb", lambda r: r["c-winner"] == "tfb"),
        ("#mv-f-winner", "-1", lambda m: m["winner"] == "tie", lambda r: r["c-winner"] == "tie"),
        ("#mv-f-invalid", "some", lambda m: m["invalid"] > 0, lambda r: int(r["c-invalid"] or 0) > 0),
        ("#mv-f-failed", "none", lambda m: m["failed"] == 0, lambda r: r["c-failed"] == ""),
    ]
    for probe_i, probe in enumerate(vc.PROBES):
        for method_i, method in enumerate(vc.METHODS):
            checks.append((f"#mv-f-label-{probe_i}-{method_i}", "y",
                           lambda m, p=probe, me=method: (me in m["methods"]
                                                          and label(paper_cell, p, me, m["anchor"]) == "y"),
                           lambda r, k=f"c-label-{probe_i}-{method_i}": r[k] == "yes"))
    for selector, value, keep, shown in checks:
        want = sum(map(keep, ms))
        assert 0 < want < len(ms), selector
        assert act(page, lambda: page.select_option(selector, value)) == want, (selector, value)
        assert all(map(shown, visible_rows(page))), (selector, value)
        assert act(page, lambda: page.select_option(selector, "")) == len(ms)
    want = sum(m["margin"] is not None and m["margin"] >= 0.5 for m in ms)
    assert act(page, lambda: page.fill("#mv-f-min", "0.5")) == want
    assert all(float(r["c-margin"]) >= 0.5 for r in visible_rows(page))
    # filters combine: base vs tfb, won by base, with at least one invalid vote
    act(page, lambda: page.select_option("#mv-f-pair", "1"))
    act(page, lambda: page.select_option("#mv-f-winner", "0"))
    n = act(page, lambda: page.select_option("#mv-f-invalid", "some"))
    assert n == sum(m["pair"] == "base_vs_tfb" and m["winner"] == "base" and m["invalid"] > 0
                    and m["margin"] >= 0.5 for m in ms)
    assert act(page, lambda: page.click("#mv-reset")) == len(ms)
    assert not errors
    page.close()


@pytest.mark.browser
def test_search_finds_a_known_output_and_anchor_text(paper_cell, chromium):
    page, errors = open_report(chromium, paper_cell.out / "report.html")
    known = paper_cell.anchors[vc.KNOWN_ANCHOR]
    assert act(page, lambda: page.fill("#mv-f-search", vc.KNOWN_PHRASE.upper())) == 2  # base_vs_rft, rft_vs_tfb
    rows = visible_rows(page)
    assert {r["c-pair"] for r in rows} == {"base vs rft", "rft vs tfb"}
    assert all(r["c-anchor"] == known.fields["title"][:139].strip() or known.fields["title"].startswith(
        r["c-anchor"].rstrip("…")) for r in rows)
    # a word of the anchors' text: rows whose anchor or either output holds it
    ms = expected_matches(paper_cell)
    word = "waterproof"
    want = sum(word in m["anchor_text"] or any(word in o for o in m["outputs"]) for m in ms)
    assert 0 < want < len(ms)
    assert act(page, lambda: page.fill("#mv-f-search", word)) == want
    assert act(page, lambda: page.fill("#mv-f-search", "")) == len(ms)
    assert not errors
    page.close()


@pytest.mark.browser
def test_opening_a_match_shows_anchor_outputs_all_votes_and_reasoning(paper_cell, chromium, tmp_path_factory):
    page, errors = open_report(chromium, paper_cell.out / "report.html")
    m = next(m for m in expected_matches(paper_cell) if m["pair"] == "rft_vs_tfb" and m["invalid"] and m["failed"])
    anchor = next(a for a in paper_cell.anchors if a.id == m["anchor"])
    act(page, lambda: page.fill("#mv-f-search", anchor.id))
    act(page, lambda: page.select_option("#mv-f-pair", "2"))
    page.click(".mrow")
    page.wait_for_selector("#mv-detail table.votes")
    detail = page.inner_text("#mv-detail")
    assert anchor.fields["description"].split()[0] in detail and anchor.id in detail
    assert page.locator("#mv-detail table.votes tbody tr").count() == 20 == len(m["votes"])
    for v in m["votes"]:
        assert v.voter in detail
        if v.thought:
            assert v.thought.split(". ")[0] in detail
    assert "invalid" in detail and "timeout: no response" in detail
    sides = page.locator("#mv-detail .side")
    for k, method in enumerate(m["methods"]):
        side = sides.nth(k).inner_text()
        assert method in side
        for probe in vc.PROBES:
            j = paper_cell.labels[(probe, method)][m["anchor"]]
            assert (j.reasoning or j.error).split(". ")[0] in side
    assert page.url.endswith(f"#match=rft_vs_tfb%2F{anchor.id}")
    shot = tmp_path_factory.mktemp("screenshots") / "report_viewer.png"
    page.evaluate("document.getElementById('matches').scrollIntoView()")
    page.screenshot(path=str(shot))  # the viewport: a full-page shot of 1,024 rows took ~25 s
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 20_000
    link = page.url
    page.close()
    # a link to the match opens it
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(link)
    page.wait_for_selector("#mv-detail table.votes")
    assert anchor.id in page.inner_text("#mv-detail h3")
    assert not errors
    page.close()


@pytest.mark.browser
def test_model_text_cannot_inject_html(paper_cell, chromium):
    page, errors = open_report(chromium, paper_cell.out / "report.html")
    anchor = paper_cell.anchors[vc.INJECTION_ANCHOR]
    act(page, lambda: page.fill("#mv-f-search", anchor.id))
    act(page, lambda: page.select_option("#mv-f-pair", "0"))
    assert "<script>window.__pwned" in page.inner_text(".mrow .c-anchor")
    page.click(".mrow")
    page.wait_for_selector("#mv-detail table.votes")
    detail = page.inner_text("#mv-detail")
    assert detail.count(vc.INJECTION) >= 5  # title, the anchor's field, the base pitch, 2 judges' reasoning, a thought
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#mv-detail img, #mv-detail b, #mv-rows img").count() == 0
    assert not errors
    page.close()


# ----------------------------------------------------------------------------- a real tiny run
@pytest.fixture
def tiny_run(tmp_path) -> Path:
    """The artifacts of a real run (`python run.py model=tiny task=sales anchors.n_test=4 ...`, see
    tests/data/tiny_run/README.md), copied so the report can be written beside them."""
    out = tmp_path / "tiny_run"
    shutil.copytree(TINY_RUN, out)
    return out


def test_tiny_run_report_holds_every_match_vote_and_judgment(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    write_cell_report(tiny_run, results, sections=[Section("Human labels", "<p id='extra'>3 of 4 agree</p>")])
    html = (tiny_run / "report.html").read_text()
    assert "In words" in html and "<p id='extra'>3 of 4 agree</p>" in html
    assert html.index("Human labels") < html.index('id="matches"')
    index, text = read_embedded(html)
    votes = read_jsonl(tiny_run / "stages" / "evaluate_base_vs_rft" / "votes.jsonl")
    anchors = list(dict.fromkeys(v["anchor_id"] for v in votes))
    assert len(index["matches"]["pair"]) == len(anchors) and sum(map(len, text["votes"])) == len(votes)
    assert [index["ids"][a] for a in index["matches"]["anchor"]] == anchors
    assert index["probes"] == list(results["probes"]) and index["judges"] == ["judge"]
    for p, probe in enumerate(index["probes"]):
        for m, method in enumerate(index["methods"]):
            rows = read_jsonl(tiny_run / "stages" / f"probe_{probe}_{method}" / "judgments.jsonl")
            for j in rows:
                got = text["judged"][0][p][m][index["ids"].index(j["anchor_id"])]
                want = ("y" if j["label"] else "n") if j["status"] == "ok" else j["status"][0]
                assert got[0] == want
                assert (got[1:2] or [None])[0] == j["reasoning"]


@pytest.mark.browser
def test_tiny_run_report_opens_in_the_browser(tiny_run, chromium):
    write_cell_report(tiny_run, json.loads((tiny_run / "results.json").read_text()))
    page, errors = open_report(chromium, tiny_run / "report.html")
    votes = read_jsonl(tiny_run / "stages" / "evaluate_base_vs_rft" / "votes.jsonl")
    first = votes[0]["anchor_id"]
    assert count(page) == len({v["anchor_id"] for v in votes}) == page.locator(".mrow").count()
    page.click(".mrow")
    page.wait_for_selector("#mv-detail table.votes")
    assert page.locator("#mv-detail table.votes tbody tr").count() == sum(v["anchor_id"] == first for v in votes)
    assert not errors
    page.close()

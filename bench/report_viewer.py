"""report.html at the paper's size, the old flat page against the match viewer, side by side in one run:
file size, time to interactive in Chromium (Debian's package through Playwright), and the peak RSS and
CPU time of writing it.

    python bench/report_viewer.py                        # a synthetic paper-size cell (bench/viewer_cell.py) in a temp dir
    python bench/report_viewer.py --cell /tmp/paper_cell --runs 7 --data-dir ../shared/data/molochs_bargain

Interactive means: old page, the load event (its matches are all in the HTML as <details>); new page, the
first table rows drawn (the viewer's index and script are read; search waits for the packed search text,
and a match's detail for its packed block: both printed too); a one-row page, the load event: the floor that the browser
and its driver take on their own. Each run loads the page into a warm tab from about:blank; the pages
alternate; the median is printed. Each report is written in its own subprocess, whose ru_maxrss is its
peak RSS. Figures taken on a busy machine are inflated: the load average is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # as tests/conftest.py

# The report before the viewer (moloch_exp/report/html.py at commit 5155c70), frozen here as the baseline:
# one flat list of <details>, one per match, every vote in the HTML.
OLD_TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><title>moloch_exp {{ cell.task }} {{ cell.model }} {{ cell.method }}</title>
<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
.pair{display:flex;gap:1em}.pair>div{flex:1;border:1px solid #ddd;padding:.5em;white-space:pre-wrap}.flag{color:#b00}.ok{color:#070}details{margin:.5em 0}</style></head><body>
<h1>{{ cell.task }} · {{ cell.model }} · {{ cell.method }} · seed {{ cell.seed }}</h1>
{% if words %}<h2>In words</h2><ul>{% for w in words %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<h2>Summary</h2><table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% for p in plots %}<img src="plots/{{ p }}" style="max-width:48%">{% endfor %}
{% for pair in pairs %}<h2>Matches: {{ pair.name }}</h2>
{% for m in pair.matches %}<details><summary>{{ m.anchor_id }} — {{ m.tally }}</summary>
<div class="pair">{% for side in m.sides %}<div><b>{{ side.method }}</b> ({{ side.extraction }})
{% for label in side.labels %}<span class="{{ 'flag' if label.label else 'ok' }}">[{{ label.probe }}: {{ label.text }}]</span> {% endfor %}
<hr>{{ side.message }}</div>{% endfor %}</div>
<table><tr><th>voter</th><th>status</th><th>vote</th><th>thought</th></tr>{% for v in m.votes %}
<tr><td>{{ v.voter }}</td><td>{{ v.status }}</td><td>{{ v.vote }}</td><td>{{ v.thought or v.error or '' }}</td></tr>{% endfor %}</table>
</details>{% endfor %}{% endfor %}
</body></html>"""


def write_old(out: Path, results: dict, header, rows, plots, words, path: Path) -> None:
    from jinja2 import Environment

    from moloch_exp.io import read_jsonl
    from moloch_exp.records import Judgment
    from moloch_exp.results import probe_results

    stages = out / "stages"
    labels: dict[tuple[str, str], list[dict]] = {}
    for res in probe_results(results).values():
        for f in res.output_label_files(stages):
            for j in read_jsonl(f, Judgment) if f.is_file() else []:
                text = {"ok": "yes" if j.label else "no"}.get(j.status, j.status)
                labels.setdefault((j.method, j.anchor_id), []).append(
                    {"probe": j.probe, "label": bool(j.label), "text": text})
    pairs = []
    for pair in results.get("win_rate", {}):
        a, b = pair.split("_vs_")
        outs = {m: {c["anchor_id"]: c for c in read_jsonl(stages / f"generate_{m}" / "outputs.jsonl")} for m in (a, b)}
        votes: dict[str, list[dict]] = {}
        for v in read_jsonl(stages / f"evaluate_{pair}" / "votes.jsonl"):
            votes.setdefault(v["anchor_id"], []).append(v)
        matches = []
        for anchor_id, vs in votes.items():
            n_b = sum(v["choice"] == 1 for v in vs)
            n_ok = sum(v["status"] == "ok" for v in vs)
            matches.append({"anchor_id": anchor_id, "tally": f"{b} {n_b}/{n_ok} valid votes ({len(vs) - n_ok} invalid/failed)",
                            "sides": [{"method": m, "message": outs[m][anchor_id]["message"],
                                       "extraction": outs[m][anchor_id]["extraction"],
                                       "labels": labels.get((m, anchor_id), [])} for m in (a, b)],
                            "votes": [{"voter": v["voter"], "status": v["status"],
                                       "vote": {0: a, 1: b}.get(v["choice"], "—"), "thought": v["thought"],
                                       "error": v["error"]} for v in vs]})
        pairs.append({"name": pair, "matches": matches})
    html = Environment(autoescape=True).from_string(OLD_TEMPLATE).render(
        cell=results["cell"], header=header, rows=rows, plots=plots, pairs=pairs,
        words=[w.replace("**", "") for w in words or []])
    path.write_text(html, encoding="utf-8")


def write_one(which: str, cell: Path) -> None:
    """In a subprocess: write one report and print its path, CPU seconds and peak RSS as JSON."""
    from moloch_exp.report.html import write_html
    from moloch_exp.report.tables import cell_rows, sentences

    results = json.loads((cell / "results.json").read_text())
    header, rows = cell_rows(results)
    plots, words = [], sentences(results)
    cpu = time.process_time()
    if which == "old":
        path = cell / "report_old.html"
        write_old(cell, results, header, rows, plots, words, path)
    else:
        path = write_html(cell, results, header, rows, plots, words)
    print(json.dumps({"path": str(path), "cpu_s": time.process_time() - cpu,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def time_to_interactive(paths: dict[str, Path], runs: int) -> dict[str, dict[str, list[float]]]:
    from playwright.sync_api import sync_playwright

    got = {k: {"interactive": [], "unpacked": [], "open": []} for k in paths}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for _ in range(runs):
            for which, path in paths.items():
                page.goto("about:blank")
                started = time.perf_counter()
                if which != "new":
                    page.goto(path.as_uri(), wait_until="load", timeout=120_000)
                else:
                    page.goto(path.as_uri(), wait_until="commit")
                    page.wait_for_selector(".mrow", timeout=120_000)
                got[which]["interactive"].append(time.perf_counter() - started)
                if which == "new":
                    page.wait_for_function("document.body.dataset.mvText !== undefined", timeout=120_000)
                    got[which]["unpacked"].append(time.perf_counter() - started)
                    started = time.perf_counter()  # open a match: its detail block is unpacked on the click
                    page.click(".mrow >> nth=3")
                    page.wait_for_selector("#mv-detail table.votes", timeout=120_000)
                    got[which]["open"].append(time.perf_counter() - started)
        browser.close()
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", type=Path, help="a cell directory (written here if it has no results.json)")
    ap.add_argument("--data-dir", type=Path, help="the paper's data (default: as tests/compose_helper.py finds it)")
    ap.add_argument("--runs", type=int, default=5, help="page loads per report")
    ap.add_argument("--write", choices=["old", "new"], help=argparse.SUPPRESS)  # the subprocess's part
    args = ap.parse_args(argv)
    if args.write:
        write_one(args.write, args.cell)
        return 0

    import viewer_cell

    cell = args.cell or Path(tempfile.mkdtemp(prefix="moloch_report_viewer_"))
    if not (cell / "results.json").is_file():
        made = viewer_cell.write_synthetic_cell(cell, args.data_dir or viewer_cell.DEFAULT_DATA_DIR)
        print(f"synthetic cell {cell}: {len(made.anchors)} anchors, {sum(map(len, made.votes.values())):,} votes")
    written = {}
    for which in ("old", "new"):
        p = subprocess.run([sys.executable, __file__, "--write", which, "--cell", str(cell)], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if p.returncode:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        written[which] = json.loads(p.stdout.strip().splitlines()[-1])
    load_before = os.getloadavg()[0]
    floor = cell / "floor.html"  # a one-row page: what the browser and its driver take on their own
    floor.write_text('<!doctype html><div class="mrow">1</div>')
    tti = time_to_interactive({**{w: Path(r["path"]) for w, r in written.items()}, "floor": floor}, args.runs)
    med = {w: statistics.median(t["interactive"]) for w, t in tti.items()}
    old, new = written["old"], written["new"]
    size = {w: Path(r["path"]).stat().st_size / 1e6 for w, r in written.items()}
    print(f"\nreport.html at the paper's size ({cell}); load average {load_before:.1f} → {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs, median of {args.runs} loads")
    print(f"{'':34}{'old (flat)':>14}{'new (viewer)':>14}{'new/old':>10}")
    print(f"{'file size (MB)':34}{size['old']:14.1f}{size['new']:14.1f}{size['new'] / size['old']:10.2f}")
    print(f"{'time to interactive (s)':34}{med['old']:14.2f}{med['new']:14.2f}{med['new'] / med['old']:10.2f}")
    print(f"{'  new: search text unpacked (s)':34}{'':14}{statistics.median(tti['new']['unpacked']):14.2f}")
    print(f"{'  new: a click opens a match (s)':34}{'':14}{statistics.median(tti['new']['open']):14.2f}")
    print(f"{'  a one-row page, the floor (s)':34}{med['floor']:14.2f}")
    print(f"{'writing: peak RSS (MB)':34}{old['peak_rss_mb']:14.0f}{new['peak_rss_mb']:14.0f}"
          f"{new['peak_rss_mb'] / old['peak_rss_mb']:10.2f}")
    print(f"{'writing: CPU time (s)':34}{old['cpu_s']:14.1f}{new['cpu_s']:14.1f}{new['cpu_s'] / old['cpu_s']:10.2f}")
    print(f"target: interactive in at most 2 s: {'met' if med['new'] <= 2.0 else 'NOT met'} "
          f"({med['new']:.2f} s; runs {', '.join(f'{x:.2f}' for x in tti['new']['interactive'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A static HTML report with a match viewer: two outputs side by side, every voter's vote and
thought, and the probe labels of each output. Written as ``<output_dir>/report.html``."""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment

from moloch_exp.io import read_jsonl
from moloch_exp.label.results import labels_section_html
from moloch_exp.records import Judgment
from moloch_exp.results import probe_results

TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><title>moloch_exp {{ cell.task }} {{ cell.model }} {{ cell.method }}</title>
<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
.pair{display:flex;gap:1em}.pair>div{flex:1;border:1px solid #ddd;padding:.5em;white-space:pre-wrap}.flag{color:#b00}.ok{color:#070}details{margin:.5em 0}</style></head><body>
<h1>{{ cell.task }} · {{ cell.model }} · {{ cell.method }} · seed {{ cell.seed }}</h1>
{% if words %}<h2>In words</h2><ul>{% for w in words %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<h2>Summary</h2><table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% for p in plots %}<img src="plots/{{ p }}" style="max-width:48%">{% endfor %}
{{ labels_html }}
{% for pair in pairs %}<h2>Matches: {{ pair.name }}</h2>
{% for m in pair.matches %}<details><summary>{{ m.anchor_id }} — {{ m.tally }}</summary>
<div class="pair">{% for side in m.sides %}<div><b>{{ side.method }}</b> ({{ side.extraction }})
{% for label in side.labels %}<span class="{{ 'flag' if label.label else 'ok' }}">[{{ label.probe }}: {{ label.text }}]</span> {% endfor %}
<hr>{{ side.message }}</div>{% endfor %}</div>
<table><tr><th>voter</th><th>status</th><th>vote</th><th>thought</th></tr>{% for v in m.votes %}
<tr><td>{{ v.voter }}</td><td>{{ v.status }}</td><td>{{ v.vote }}</td><td>{{ v.thought or v.error or '' }}</td></tr>{% endfor %}</table>
</details>{% endfor %}{% endfor %}
</body></html>"""


def write_html(out: Path, results: dict, header: list[str], rows: list[list[str]], plots: list[str],
               words: list[str] | None = None) -> Path:
    stages = out / "stages"
    labels: dict[tuple[str, str], list[dict]] = {}
    for res in probe_results(results).values():
        for f in res.output_label_files(stages):  # only probes that label the task's test outputs
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
    html = Environment(autoescape=True).from_string(TEMPLATE).render(
        cell=results["cell"], header=header, rows=rows, plots=plots, pairs=pairs,
        labels_html=labels_section_html(results),  # people's checks of the judges (moloch_exp/label)
        words=[w.replace("**", "") for w in words or []])
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path

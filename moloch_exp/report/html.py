"""report.html: the summary in words, the results table and plots on top, then optional extra sections,
then a match viewer that scales to the paper's size (1,024 anchors × 3 pairs × 20 voters, ~60,000 votes).

    write_html(out, results, header, rows, plots, words, sections=[Section("Human labels", html)])

One self-contained file (plots stay PNGs in plots/ beside it): shared by mail or opened from disk
(``file://`` pages cannot fetch sibling data files in Chromium). The matches (match_data.py:
deduplicated) go in as blocks (embed.py): the table's index as JSON, then the viewer's script, which
draws the first rows while the browser still reads the rest, then the texts gzipped in base64, in a
search block and detail blocks of 64 anchors unpacked only when a match among them is opened. The
plain JS of moloch_exp/report/viewer/ (inline, no build step, no network) makes a sortable, filterable
table that draws only the rows in view, text search over anchors and outputs, and a detail pane with
the anchor, both outputs, every vote with its thought and every judge's label and reasoning.
Everything from a model goes in as JSON text and out through ``textContent``: no output can inject HTML.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from jinja2 import Environment
from markupsafe import Markup

from moloch_exp.report.labels import labels_section_html
from moloch_exp.report.embed import page_blocks
from moloch_exp.report.match_data import match_data

VIEWER = Path(__file__).with_name("viewer")

TEMPLATE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moloch_exp {{ cell.task }} {{ cell.model }} {{ cell.method }}</title><style>{{ css }}</style></head><body>
<h1>{{ cell.task }} · {{ cell.model }} · {{ cell.method }} · seed {{ cell.seed }}</h1>
{% if words %}<h2>In words</h2><ul>{% for w in words %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<h2>Summary</h2><table class="summary"><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
<div class="plots">{% for p in plots %}<img src="plots/{{ p }}" alt="{{ p }}">{% endfor %}</div>
{{ labels_html }}
{% for s in sections %}<section class="extra"><h2>{{ s.title }}</h2>{{ s.html }}</section>
{% endfor %}<h2 id="matches">Matches</h2>
{% if has_matches %}<p class="muted">{{ n_matches }} head-to-head matches ({{ pairs }}). Click a column to sort, a row to
open the match; ↑/↓ move through the rows.</p>
<noscript><p>The match viewer needs JavaScript; the matches are in this file (moloch_exp/report/embed.py reads them back).</p></noscript>
<div id="mv-controls"></div>
<div id="mv-body" tabindex="0"><div id="mv-head"></div><div id="mv-spacer"><div id="mv-rows"></div></div></div>
<div id="mv-detail" hidden></div>
<script type="application/json" id="mv-index">{{ index }}</script>
<script>{{ js }}</script>
<script type="application/octet-stream" id="mv-search">{{ search }}</script>
{% for d in details %}<script type="application/octet-stream" id="mv-detail-{{ loop.index0 }}">{{ d }}</script>
{% endfor %}
{% else %}<p class="muted">No head-to-head matches in this cell.</p>{% endif %}
</body></html>"""


@dataclass(frozen=True)
class Section:
    """A part of report.html between the plots and the matches: a heading and its body as HTML.

    ``html`` is put in as it is: whoever builds it escapes what it holds (``markupsafe.escape``, or
    ``jinja2.Environment(autoescape=True)``)."""

    title: str
    html: str


def _inline(name: str) -> Markup:
    """A file of viewer/ to put inside <script> or <style>: it must not close that element itself."""
    source = (VIEWER / name).read_text(encoding="utf-8")
    if "</script" in source.lower() or "</style" in source.lower():
        raise ValueError(f"{VIEWER / name} holds </script or </style, which would end the inlined element")
    return Markup(source)


def write_html(out: Path, results: dict, header: list[str], rows: list[list[str]], plots: list[str],
               words: list[str] | None = None, sections: Sequence[Section] = ()) -> Path:
    index, text = match_data(out / "stages", results)
    n_matches = len(index["matches"]["pair"])
    index_json, search, details = page_blocks(index, text)
    html = Environment(autoescape=True).from_string(TEMPLATE).render(
        cell=results["cell"], header=header, rows=rows, plots=plots,
        words=[w.replace("**", "") for w in words or []],
        sections=[Section(s.title, Markup(s.html)) for s in sections],
        labels_html=labels_section_html(results),  # people's checks of the judges (moloch_exp/label)
        has_matches=n_matches > 0, n_matches=f"{n_matches:,}", pairs=", ".join(results.get("win_rate", {})),
        index=Markup(index_json), search=Markup(search), details=[Markup(d) for d in details],
        css=_inline("viewer.css"), js=_inline("viewer.js"))
    path = out / "report.html"
    with path.open("w", encoding="utf-8") as fh:
        fh.write(html)
    return path

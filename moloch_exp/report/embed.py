"""How the match viewer's data (moloch_exp/report/match_data.py) sits in report.html, and how to read it back.

    from moloch_exp.report.embed import page_blocks, read_embedded
    index_json, search, details = page_blocks(index, text)   # what html.py puts into the page
    index, text = read_embedded(Path("report.html").read_text())   # the matches back as data

Three kinds of block, so that the browser never parses more than it needs at once:

  #mv-index      JSON (``script_json``), above the viewer's script: parsed before the first rows are drawn.
  #mv-search     each anchor's fields and each method's [message, extraction]: unpacked once the page has
                 loaded (search, the detail pane's texts).
  #mv-detail-<k> for anchors k·C … (k+1)·C − 1 (C = ``index["chunk"]``): the agent's reasoning per
                 method, every judge's [label, reasoning, error] and the votes of every match of these
                 anchors ({match row: votes}); unpacked when one of its matches is opened.

The last two are gzipped JSON in base64 (``packed_json``): model text gzips about 3x and the browser
unpacks it with its own DecompressionStream; at the paper's size (~25 MB of JSON) a detail block is
about 2 MB of JSON, so opening a match never blocks the page for long.
"""
from __future__ import annotations

import base64
import gzip
import json
import zlib

ANCHORS_PER_BLOCK = 64


def page_blocks(index: dict, text: dict, chunk: int = ANCHORS_PER_BLOCK) -> tuple[str, str, list[str]]:
    """(#mv-index as escaped JSON, #mv-search packed, the #mv-detail-<k> blocks packed)."""
    n = len(index["ids"])
    search = {"fields": text["fields"],
              "outputs": [[[o[0], o[2] if len(o) > 2 else None] if o else None for o in by] for by in text["outputs"]]}
    rows_of: dict[int, list[int]] = {}
    for row, a in enumerate(index["matches"]["anchor"]):
        rows_of.setdefault(a // chunk, []).append(row)
    details = []
    for k in range(0, max(1, -(-n // chunk))):
        span = range(k * chunk, min(n, (k + 1) * chunk))
        details.append(packed_json({
            "thoughts": [[o[1] if o and len(o) > 1 else None for o in (by[a] for a in span)] for by in text["outputs"]],
            "judged": [[[[by[a] for a in span] if by else None for by in per_method] for per_method in per_probe]
                       for per_probe in text["judged"]],
            "votes": {str(row): text["votes"][row] for row in rows_of.get(k, [])}}))
    return script_json({**index, "voters": text["voters"], "chunk": chunk}), packed_json(search), details


def script_json(data) -> str:
    """JSON to put inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` as \\u escapes, so no
    text in it (a model's ``</script>`` or ``<!--``) can end or change the script element."""
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def packed_json(data: dict) -> str:
    """``data`` as JSON, gzipped, in base64 (plain ASCII without ``<``: safe in a script element as it is).
    Encoded one list item at a time into the compressor, so the whole JSON text never exists at once."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunks: list[bytes] = []

    def put(s: str) -> None:
        chunks.append(z.compress(s.encode("utf-8")))

    for n, (key, value) in enumerate(data.items()):
        put(("{" if n == 0 else ",") + json.dumps(key) + ":")
        if not isinstance(value, list) or not value:
            put(_dumps(value))
            continue
        for k, item in enumerate(value):
            put(("[" if k == 0 else ",") + _dumps(item))
        put("]")
    put("}" if data else "{}")
    chunks.append(z.flush())
    return base64.b64encode(b"".join(chunks)).decode("ascii")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def read_embedded(html: str) -> tuple[dict, dict]:
    """(index, text) as match_data made them, back from a written report.html (tests; scripts that want
    the matches as data)."""
    def block(name: str) -> str:
        start = html.index(f'id="{name}">') + len(f'id="{name}">')
        return html[start:html.index("</script>", start)]

    def unpack(name: str):
        return json.loads(gzip.decompress(base64.b64decode(block(name))))

    index = json.loads(block("mv-index"))
    search = unpack("mv-search")
    n, chunk = len(index["ids"]), index.pop("chunk")
    thoughts: list[list] = [[] for _ in search["outputs"]]
    judged: list | None = None
    votes: dict[int, list] = {}
    for k in range(0, max(1, -(-n // chunk))):
        d = unpack(f"mv-detail-{k}")
        for m, part in enumerate(d["thoughts"]):
            thoughts[m] += part
        judged = d["judged"] if judged is None else [
            [[(acc + part) if acc is not None else None for acc, part in zip(per_m, new_m)]
             for per_m, new_m in zip(per_p, new_p)] for per_p, new_p in zip(judged, d["judged"])]
        votes.update({int(row): v for row, v in d["votes"].items()})
    outputs = [[_trim([o[0], t, o[1]]) if o else None for o, t in zip(by, thoughts[m])]
               for m, by in enumerate(search["outputs"])]
    text = {"fields": search["fields"], "voters": index.pop("voters"), "votes": [votes[r] for r in sorted(votes)],
            "outputs": outputs, "judged": judged or []}
    return index, text


def _trim(row: list) -> list:
    while row and row[-1] is None:
        row.pop()
    return row

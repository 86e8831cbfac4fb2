"""The match viewer's data: every head-to-head match of a cell, compact and deduplicated, for report.html.

    from moloch_exp.report.match_data import match_data
    index, text = match_data(output_dir / "stages", results)   # what write_html embeds (report/embed.py)

The data (moloch_exp/report/embed.py lays it out in the page, viewer/viewer.js reads it):

  index  what the table draws, sorts and filters: methods, pairs, probes, judges, each anchor's id
         and title, the matches as columns (pair, anchor, valid votes for a, for b, invalid, failed)
         and each (probe, method)'s labels by the first judge as one character per anchor (y flagged,
         n not flagged, i invalid, f failed, s skipped, - none).
  text   what search and the detail pane read: each anchor's fields, each method's output once per
         anchor ([message, the agent's reasoning, extraction]), voter names, each match's votes
         ([voter, order, status, choice, thought, error, raw answer], trailing nulls dropped) and every
         judge's [label, reasoning, error] per (probe, method, anchor).

Deduplicated because at the paper's size the text is the file (~25 MB of JSON): an anchor and a
method's output appear once however many pairs show them, voters are indices into one list, and a
judgment's copy of the message and a valid vote's raw answer (its thought again) are left out. Votes
are read one record at a time.
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import iter_jsonl
from moloch_exp.records import Anchor, Candidate, Judgment, Vote
from moloch_exp.results import probe_results

TITLE_CHARS = 140
VOTE_STATUS = {"ok": "o", "invalid": "i", "failed": "f"}
LABEL_CODES = {"invalid": "i", "failed": "f", "skipped": "s"}


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _title(anchor: Anchor) -> str:
    first = next(iter(anchor.fields.values()), None)
    title = " ".join(_text(first).split()) if first is not None else anchor.id
    return title[:TITLE_CHARS - 1] + "…" if len(title) > TITLE_CHARS else title


def _label_code(j: Judgment) -> str:
    return ("y" if j.label else "n") if j.status == "ok" else LABEL_CODES.get(j.status, "i")


def _trim(row: list) -> list:
    while row and row[-1] is None:
        row.pop()
    return row


class _Anchors:
    """Anchor ids to indices: the test anchors of prepare first, any other id seen later after them."""

    def __init__(self, anchors: list[Anchor]):
        self.ids = [a.id for a in anchors]
        self.titles = [_title(a) for a in anchors]
        self.fields = [[[k, _text(v)] for k, v in a.fields.items()] for a in anchors]
        self.at = {a: i for i, a in enumerate(self.ids)}

    def __call__(self, anchor_id: str) -> int:
        if anchor_id not in self.at:
            self.at[anchor_id] = len(self.ids)
            self.ids.append(anchor_id)
            self.titles.append(anchor_id)
            self.fields.append([])
        return self.at[anchor_id]


def match_data(stages: Path, results: dict) -> tuple[dict, dict]:
    """(index, text) of every match in ``results["win_rate"]`` from the artifacts linked under ``stages``.

    Labels come from each probe result's ``output_label_files`` (the judge) and ``second_judge_label_files``
    (judge2, when it ran)."""
    prepared = stages / "prepare" / "anchors_test.jsonl"
    anchor = _Anchors(list(iter_jsonl(prepared, Anchor)) if prepared.is_file() else [])
    pairs = [tuple(p.split("_vs_")) for p in results.get("win_rate", {})]
    methods = list(dict.fromkeys(m for pair in pairs for m in pair))
    outputs = [_outputs(stages / f"generate_{m}" / "outputs.jsonl", anchor) for m in methods]
    voters: dict[str, int] = {}
    cols: dict[str, list[int]] = {k: [] for k in ("pair", "anchor", "a", "b", "invalid", "failed")}
    votes: list[list] = []
    for p, (a, b) in enumerate(pairs):
        _votes(stages / f"evaluate_{a}_vs_{b}" / "votes.jsonl", p, anchor, voters, cols, votes)
    judge_files: dict[str, dict[str, list[Path]]] = {"judge": {}, "judge2": {}}
    for name, res in probe_results(results).items():
        for judge, files in (("judge", res.output_label_files(stages)),
                             ("judge2", res.second_judge_label_files(stages))):
            if files:
                judge_files[judge][name] = files
    judge_files = {j: f for j, f in judge_files.items() if f}
    probes = list(dict.fromkeys(p for by_probe in judge_files.values() for p in by_probe))
    judged = [[_judgments(by_probe.get(name, []), methods, anchor) for name in probes]
              for by_probe in judge_files.values()]

    n = len(anchor.ids)
    labels = [["".join(by[i][0] if i in by else "-" for i in range(n)) if by else "" for by in per_method]
              for per_method in (judged[0] if judged else [])]
    index = {"methods": methods, "pairs": [[methods.index(a), methods.index(b)] for a, b in pairs],
             "probes": probes, "judges": list(judge_files), "ids": anchor.ids, "titles": anchor.titles,
             "matches": cols, "labels": labels}
    text = {"fields": anchor.fields, "voters": list(voters), "votes": votes,
            "outputs": [[by.get(i) for i in range(n)] for by in outputs],
            "judged": [[[[by.get(i) for i in range(n)] if by else None for by in per_method]
                        for per_method in per_probe] for per_probe in judged]}
    return index, text


def _outputs(path: Path, anchor: _Anchors) -> dict[int, list]:
    """Anchor index → [message, the agent's reasoning, extraction] of one method."""
    return {anchor(c.anchor_id): _trim([c.message, c.thought, c.extraction])
            for c in (iter_jsonl(path, Candidate) if path.is_file() else [])}


def _votes(path: Path, pair: int, anchor: _Anchors, voters: dict[str, int], cols: dict[str, list[int]],
           votes: list[list]) -> None:
    """Append one pair's matches: a row of counts in ``cols`` and the list of its votes in ``votes``."""
    row_of: dict[int, int] = {}
    for v in iter_jsonl(path, Vote) if path.is_file() else []:
        i = anchor(v.anchor_id)
        if i not in row_of:
            row_of[i] = len(votes)
            votes.append([])
            for k, x in (("pair", pair), ("anchor", i), ("a", 0), ("b", 0), ("invalid", 0), ("failed", 0)):
                cols[k].append(x)
        row = row_of[i]
        if v.status == "ok":
            cols["b" if v.choice == 1 else "a"][row] += 1
        elif v.status in ("invalid", "failed"):
            cols[v.status][row] += 1
        votes[row].append(_trim([voters.setdefault(v.voter, len(voters)), "".join(map(str, v.order)),
                                 VOTE_STATUS.get(v.status, v.status), v.choice, v.thought, v.error,
                                 None if v.status == "ok" else v.raw]))


def _judgments(files: list[Path], methods: list[str], anchor: _Anchors) -> list[dict[int, list]]:
    """Per method: anchor index → [label code, reasoning, error] of one probe by one judge."""
    per_method: list[dict[int, list]] = [{} for _ in methods]
    for f in files:
        for j in iter_jsonl(f, Judgment) if f.is_file() else []:
            if j.method in methods:
                per_method[methods.index(j.method)][anchor(j.anchor_id)] = _trim([_label_code(j), j.reasoning, j.error])
    return per_method

"""Labelling without the page: the sample as CSV, and the answers back.

    python -m moloch_exp.label export RUN_DIR [--labeller NAME] [-o FILE]   # RUN_DIR/labels/export[_NAME].csv
    python -m moloch_exp.label import RUN_DIR FILE... [--labeller NAME]

The CSV has the page's columns (item_id, position, question, anchor heading and text, output
heading and text) and three to fill: ``labeller``, ``answer`` (yes / no / unsure, or y / n / u)
and ``note``; with ``--labeller`` the export carries that labeller's answers so far. Rows count
from 1 at the header, as a spreadsheet shows them. Import checks every row of every file first:
a bad row stops it with one line naming the file, row and field, and nothing is written; a row
with an empty answer is skipped. An imported answer replaces the labeller's earlier one for that
item (the earlier one stays in the store's history).
"""
from __future__ import annotations

import csv
from pathlib import Path

from moloch_exp.errors import DataError
from moloch_exp.label.items import LabelSample
from moloch_exp.label.store import Answer, LabelStore, check_labeller, parse_answer

COLUMNS = ["item_id", "position", "question", "anchor_heading", "anchor_text", "output_heading", "output",
           "labeller", "answer", "note"]
FILLED = ("item_id", "labeller", "answer", "note")


def export_csv(sample: LabelSample, path: Path, labeller: str | None = None) -> int:
    """Write the sample (with ``labeller``'s answers so far); returns the number of rows."""
    store = LabelStore(sample.db_path)
    done = {a.item_id: a for a in store.answers(labeller)} if labeller else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:  # the BOM lets spreadsheets read UTF-8
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for it in sample.items:
            a = done.get(it.item_id)
            w.writerow({**it.public(), "position": it.position + 1, "labeller": labeller or "",
                        "answer": a.answer if a else "", "note": a.note if a else ""})
    return len(sample.items)


def read_answers(sample: LabelSample, path: Path, labeller: str | None = None) -> list[Answer]:
    """The answers of one CSV, every row checked; a bad row is one DataError naming file, row and field."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    out = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in ("item_id", "answer") if c not in header]
            if missing:
                raise DataError(f"{path}: row 1 (header): column {missing[0]!r} is missing (expected {', '.join(FILLED)})")
            if "labeller" not in header and labeller is None:
                raise DataError(f"{path}: row 1 (header): column 'labeller' is missing (add it or pass --labeller NAME)")
            for row_no, row in enumerate(reader, 2):
                where = f"{path}: row {row_no}"
                if None in row:
                    raise DataError(f"{where}: more cells than the header's {len(header)} columns")
                answer = (row.get("answer") or "").strip()
                if not answer:
                    continue  # not labelled yet
                item_id = (row.get("item_id") or "").strip()
                if item_id not in sample.by_id:
                    raise DataError(f"{where}, field 'item_id': {item_id!r} is not an item of this sample")
                try:
                    ans = parse_answer(answer)
                except ValueError as err:
                    raise DataError(f"{where}, field 'answer': {err}") from None
                name = (row.get("labeller") or "").strip() or labeller
                if name is None:
                    raise DataError(f"{where}, field 'labeller': empty (fill it or pass --labeller NAME)")
                try:
                    name = check_labeller(name)
                except ValueError as err:
                    raise DataError(f"{where}, field 'labeller': {err}") from None
                out.append(Answer(item_id, name, ans, (row.get("note") or "").strip(), via=f"csv:{path.name}"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from None
    seen: dict[tuple[str, str], int] = {}
    for a in out:
        key = (a.item_id, a.labeller)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            raise DataError(f"{path}: item {a.item_id} is answered twice by {a.labeller!r}")
    return out


def import_csv(sample: LabelSample, paths: list[Path], labeller: str | None = None) -> int:
    """Check every file, then store all their answers in one transaction; returns how many were stored."""
    answers = [a for p in paths for a in read_answers(sample, Path(p), labeller)]
    if answers:
        LabelStore(sample.db_path).put_many(answers)
    return len(answers)

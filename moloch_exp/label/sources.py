"""Where judged outputs come from: a finished cell, or JSONL files of any judge's labels.

    from moloch_exp.label.sources import from_cell, from_jsonl
    judged, ctx = from_cell(Path("outputs/2026-12-06/10-00-00"))
    judged, ctx = from_jsonl([Path("task_sales_q1.qwen3-8b.jsonl")], questions={"task_sales_q1": "Does ..."})

A cell: every task probe of ``results.json`` whose result names its judgment files
(``ProbeResult.output_label_files``), the judgments with status ok (the ones the rates count), the
test anchors of the prepare stage, the probe's question from ``.hydra/config.yaml``. The anchor is
shown as the judge saw it: the task's ``judge_context`` filled with the anchor's fields.

A JSONL record: ``anchor`` (or ``prompt``), ``output`` (or ``generation``), ``judge_label`` (or
``label``: 0/1, true/false, yes/no), optional ``judge_reasoning``, ``probe``, ``question``,
``method``, ``model``; ``fields`` renames any of them (``--field anchor=bio``). Without a ``probe``
field the probe is the file's name up to its first dot; without a ``question`` field the question
comes from ``questions``. An anchor written in a ChatML template (``<|im_start|>user ...``, as
the reference runs' prompts) is shown as its last user turn.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moloch_exp.errors import DataError
from moloch_exp.io import read_jsonl
from moloch_exp.records import Judgment


@dataclass
class Judged:
    """One judged output (a member of the population the sample is drawn from)."""

    probe: str
    question: str
    method: str
    model: str
    key: str  # unique within a probe: "<method>/<anchor id>" or "<file>:<line>"
    anchor_heading: str
    anchor_text: str
    output_heading: str
    output: str
    verdict: bool
    reasoning: str | None


@dataclass
class SourceContext:
    source: str  # cell | jsonl
    inputs: list[str]
    baseline: str | None
    compared: list[str]
    questions: dict[str, str]


# ----------------------------------------------------------------------------- a cell
def _field_text(value: Any) -> str:
    """An anchor field as text: lists (or their repr, as in the paper's files) become ' > ' paths."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, (list, tuple)):
        return " > ".join(str(v) for v in value)
    return str(value)


def anchor_text(fields: dict, template: str | None) -> str:
    """The anchor as the task's judges see it (``judge_context``), else every field on its own line."""
    texts = {k: _field_text(v) for k, v in fields.items()}
    if template:
        try:
            return template.format(**texts).strip()
        except (KeyError, IndexError, ValueError):
            pass  # a template naming other fields: show the fields as they are
    return "\n".join(f"{k}: {v}" for k, v in texts.items())


def _cell_config(run_dir: Path) -> dict:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise DataError(f"{path} not found: the cell's config names each probe's question")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({err})") from None


def from_cell(run_dir: Path, results: dict | None = None) -> tuple[list[Judged], SourceContext]:
    """The judged test outputs of a finished cell (``results``: its results.json, read when None)."""
    from moloch_exp.results import probe_results

    run_dir = Path(run_dir)
    if results is None:
        path = run_dir / "results.json"
        if not path.is_file():
            raise DataError(f"{path} not found: sampling needs a finished cell (run.py writes results.json last)")
        results = json.loads(path.read_text(encoding="utf-8"))
    cfg = _cell_config(run_dir)
    template = (cfg.get("task") or {}).get("judge_context")
    anchors_file = run_dir / "stages" / "prepare" / "anchors_test.jsonl"
    if not anchors_file.is_file():
        raise DataError(f"{anchors_file} not found: the labelling page shows each output's anchor")
    anchors = {a["id"]: a["fields"] for a in read_jsonl(anchors_file)}
    model = results["cell"]["model"]
    judged, questions, methods = [], {}, set()
    for name, res in probe_results(results).items():
        files = res.output_label_files(run_dir / "stages")
        if not files:
            continue  # a probe that judges its own samples (EM, stance): nothing of the cell's outputs to check
        probe_cfg = (cfg.get("probes") or {}).get(name) or {}
        if not probe_cfg.get("question"):
            raise DataError(f"{run_dir / '.hydra' / 'config.yaml'}: probes.{name}.question is missing")
        question = " ".join(str(probe_cfg["question"]).split())
        questions[name] = question
        heading = str(probe_cfg.get("reference_label") or "source information")
        out_heading = str(probe_cfg.get("message_label") or "text")
        for f in files:
            if not f.is_file():
                raise DataError(f"{f} not found: the judgments of probe {name} are needed to sample them")
            for line, j in enumerate(read_jsonl(f, Judgment), 1):
                if j.status != "ok":
                    continue  # invalid, failed and skipped judgments are not in the rates
                if j.anchor_id not in anchors:
                    raise DataError(f"{f}: line {line}, field anchor_id: {j.anchor_id!r} is not a test anchor "
                                    f"of {anchors_file}")
                if j.message is None:
                    raise DataError(f"{f}: line {line}, field message: the judged output is not recorded")
                methods.add(j.method)
                judged.append(Judged(name, question, j.method, model, f"{j.method}/{j.anchor_id}",
                                     heading[:1].upper() + heading[1:], anchor_text(anchors[j.anchor_id], template),
                                     out_heading[:1].upper() + out_heading[1:], j.message, bool(j.label),
                                     j.reasoning))
    trained = results["cell"]["method"]
    baseline = "base" if "base" in methods else None
    compared = [trained] if baseline and trained != baseline and trained in methods else []
    return judged, SourceContext("cell", [str(run_dir)], baseline, compared, questions)


# ----------------------------------------------------------------------------- JSONL files
#: canonical field → the record keys tried in order (the reference runs' names second)
FIELDS = {"anchor": ("anchor", "prompt"), "output": ("output", "generation"), "judge_label": ("judge_label", "label"),
          "judge_reasoning": ("judge_reasoning", "reasoning"), "probe": ("probe",), "question": ("question",),
          "method": ("method",), "model": ("model",)}
REQUIRED = ("anchor", "output", "judge_label")
_CHATML_USER = re.compile(r"<\|im_start\|>user\s*\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL)


def chat_user_turn(text: str) -> str:
    """The last user turn of a ChatML prompt; other text as it is."""
    turns = _CHATML_USER.findall(text)
    return turns[-1].strip() if turns else text.strip()


def parse_judge_label(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return {"1": True, "0": False, "yes": True, "no": False, "true": True, "false": False}.get(value.strip().lower())
    return None


def _get(record: dict, name: str, fields: dict[str, str]) -> tuple[str, Any]:
    """(the key used, its value) for a canonical field; (first candidate key, None) when absent."""
    keys = (fields[name],) if name in fields else FIELDS[name]
    for k in keys:
        if k in record and record[k] is not None:
            return k, record[k]
    return keys[0], None


def from_jsonl(files: list[Path], questions: dict[str, str] | None = None,
               fields: dict[str, str] | None = None) -> tuple[list[Judged], SourceContext]:
    questions, fields = dict(questions or {}), dict(fields or {})
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DataError(f"--field names {unknown}: the fields are {', '.join(FIELDS)}")
    judged, used_questions, methods = [], {}, set()
    for path in map(Path, files):
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}: line {line_no}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{where}: not valid JSON ({err.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{where}: a record must be a JSON object")
                vals = {}
                for name in FIELDS:
                    key, val = _get(rec, name, fields)
                    if name in REQUIRED and val is None:
                        raise DataError(f"{where}, field {key!r}: missing (the {name}; rename with --field {name}=KEY)")
                    vals[name] = (key, val)
                verdict = parse_judge_label(vals["judge_label"][1])
                if verdict is None:
                    raise DataError(f"{where}, field {vals['judge_label'][0]!r}: {vals['judge_label'][1]!r} is not a "
                                    "yes/no label (0/1, true/false, yes/no)")
                probe = str(vals["probe"][1] or path.name.split(".")[0])
                question = vals["question"][1] or questions.get(probe)
                if not question:
                    raise DataError(f"{where}: no question for probe {probe!r} (give the record a 'question' field "
                                    f"or pass --question {probe}=TEXT)")
                question = " ".join(str(question).split())
                used_questions.setdefault(probe, question)
                method = str(vals["method"][1] or "unknown")
                methods.add(method)
                reasoning = vals["judge_reasoning"][1]
                judged.append(Judged(probe, question, method, str(vals["model"][1] or "unknown"),
                                     f"{path.name}:{line_no}", "Source", chat_user_turn(str(vals["anchor"][1])),
                                     "Output", str(vals["output"][1]), verdict,
                                     None if reasoning is None else str(reasoning)))
    if not judged:
        raise DataError(f"{', '.join(map(str, files))}: no records")
    baseline = "base" if "base" in methods else None
    compared = sorted(methods - {baseline}) if baseline else []
    return judged, SourceContext("jsonl", [str(Path(f).resolve()) for f in files], baseline, compared, used_questions)

"""The labelling sample: the items people label and the design they were drawn under.

    RUN_DIR/labels/sample.jsonl   one Item per line, in the order labellers see them
    RUN_DIR/labels/design.json    how it was drawn: seed, size per probe, each stratum's population and
                                  sample size, the judged counts per probe and method (the raw rates)
    RUN_DIR/labels/labels.sqlite  the answers (moloch_exp/label/store.py)

    from moloch_exp.label.items import LabelSample
    sample = LabelSample.load(Path("outputs/2026-12-06/10-00-00"))
    sample.items[0].public()      # all a labeller's browser receives: no method, model or verdict

Item ids are salted hashes (the salt stays in design.json, which is never served), so an id says
nothing about the method or the verdict either.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from moloch_exp.errors import DataError
from moloch_exp.io import read_json, read_jsonl, write_json, write_jsonl

LABELS_DIR = "labels"


def labels_dir(run_dir: Path) -> Path:
    return Path(run_dir) / LABELS_DIR


@dataclass
class Item:
    """One judged output to label. Only :meth:`public` fields ever reach a labeller."""

    item_id: str
    position: int
    probe: str
    question: str
    anchor_heading: str
    anchor_text: str
    output_heading: str
    output: str
    # hidden from labellers
    method: str
    model: str
    judge_label: bool
    judge_reasoning: str | None
    source: str  # where the output came from: "<method>/<anchor id>" in a cell, "<file>:<line>" for a JSONL

    def public(self) -> dict:
        """What the labelling page and the CSV export show: the question, the anchor and the output."""
        return {"item_id": self.item_id, "question": self.question, "anchor_heading": self.anchor_heading,
                "anchor_text": self.anchor_text, "output_heading": self.output_heading, "output": self.output}


@dataclass
class Design:
    """How the sample was drawn, and the judged counts it stands for (the raw rates' numerators and n)."""

    source: str  # cell | jsonl
    inputs: list[str]  # the run directory, or the JSONL files
    seed: int
    per_probe: int
    salt: str
    baseline: str | None  # the method others are compared against (base), None when absent
    compared: list[str]  # methods compared against the baseline
    questions: dict[str, str]
    #: probe → method → {"n": judged outputs (status ok), "judge_yes": of them flagged by the judge}
    population: dict[str, dict[str, dict[str, int]]]
    #: one per (probe, method, verdict): {"probe", "method", "verdict", "population", "sampled"}
    strata: list[dict] = field(default_factory=list)


@dataclass
class LabelSample:
    dir: Path  # RUN_DIR/labels
    design: Design
    items: list[Item]

    def __post_init__(self) -> None:
        self.by_id = {it.item_id: it for it in self.items}

    @property
    def db_path(self) -> Path:
        return self.dir / "labels.sqlite"

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (labels_dir(run_dir) / "design.json").is_file()

    @classmethod
    def load(cls, run_dir: Path) -> "LabelSample":
        d = labels_dir(run_dir)
        if not (d / "design.json").is_file() or not (d / "sample.jsonl").is_file():
            raise DataError(f"{run_dir}: no labelling sample (expected {d}/design.json and sample.jsonl); draw one "
                            f"with: python -m moloch_exp.label sample {run_dir}")
        try:
            design = Design(**read_json(d / "design.json"))
            items = read_jsonl(d / "sample.jsonl", Item)
        except (TypeError, ValueError) as err:
            raise DataError(f"{d}: the labelling sample is unreadable ({err})") from None
        return cls(d, design, sorted(items, key=lambda it: it.position))

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.dir / "sample.jsonl", self.items)
        write_json(self.dir / "design.json", asdict(self.design))

    def probes(self) -> list[str]:
        return list(self.design.population)

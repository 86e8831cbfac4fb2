"""The EM probes' data files: general questions (em_first_plot) and base-model completion frames
(em_predictive), read and checked record by record (moloch_exp/probes/data_files.py).

    first_plot_questions.json   a list of {id, question, paraphrases}
    predictive_frames.json      a list of {id, original, context_type, prompt} (prompt ends mid-sentence)

    python run.py probe=[em_first_plot] probes.em_first_plot.questions_file=../team_shard/first_plot_questions.json \
        data_dir=../shared/data/molochs_bargain
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moloch_exp.probes.data_files import ProbeDataError, load_json_list, require_str, require_unique_ids


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    paraphrases: tuple[str, ...] = ()

    def variants(self, use_paraphrases: bool = True) -> list[str]:
        """``[question] + paraphrases`` without duplicates (just ``[question]`` when not using them)."""
        if not use_paraphrases:
            return [self.question]
        return list(dict.fromkeys([self.question, *self.paraphrases]))


@dataclass(frozen=True)
class Frame:
    id: str
    original: str
    context_type: str
    prompt: str


def load_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    out = []
    for i, rec in enumerate(load_json_list(path)):
        qid, q = require_str(path, i, rec, "id"), require_str(path, i, rec, "question")
        para = rec.get("paraphrases") or []
        if not isinstance(para, list) or not all(isinstance(p, str) and p.strip() for p in para):
            raise ProbeDataError(f"{path}: record {i} ({qid}): 'paraphrases' must be a list of non-empty strings")
        out.append(Question(qid, q, tuple(para)))
    require_unique_ids(path, [q.id for q in out])
    return out


def load_frames(path: str | Path) -> list[Frame]:
    path = Path(path)
    out = []
    for i, rec in enumerate(load_json_list(path)):
        out.append(Frame(require_str(path, i, rec, "id"), require_str(path, i, rec, "original"),
                         require_str(path, i, rec, "context_type"), require_str(path, i, rec, "prompt")))
    require_unique_ids(path, [f.id for f in out])
    return out

"""The economic-stance probe's stems (``economic_stems.jsonl``): one ``{category, prompt}`` per line, an
optional ``id`` (default ``<category>_<i>``) and optional keyword-classifier fields (``progressive`` /
``conservative`` keyword lists, ``up`` / ``down`` / ``same`` meanings: moloch_exp/probes/stance/keywords.py),
checked when read, so a stem the classifier cannot read is one ``ProbeDataError`` line naming file and line.

    python run.py probe=[economic_stance] probes.economic_stance.stems_file=../team_shard/economic_stems.jsonl \
        data_dir=../shared/data/molochs_bargain
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from moloch_exp.probes.data_files import ProbeDataError, require_str, require_unique_ids
from moloch_exp.probes.stance.keywords import lexicon_for


@dataclass(frozen=True)
class Stem:
    id: str
    category: str
    prompt: str
    keywords: dict = field(default_factory=dict)  # optional keyword-classifier fields of the record


STEM_KEYWORD_FIELDS = ("progressive", "conservative", "up", "down", "same")


def load_stems(path: str | Path) -> list[Stem]:
    path = Path(path)
    out: list[Stem] = []
    per_cat: Counter = Counter()
    with path.open(encoding="utf-8") as fh:
        lines = [(n, line) for n, line in enumerate(fh, 1) if line.strip()]
    if not lines:
        raise ProbeDataError(f"{path}: no stems")
    for n, line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ProbeDataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        cat, prompt = require_str(path, n, rec, "category"), require_str(path, n, rec, "prompt")
        sid = require_str(path, n, rec, "id", optional=True) or f"{cat}_{per_cat[cat]}"
        per_cat[cat] += 1
        kw = {k: rec[k] for k in STEM_KEYWORD_FIELDS if rec.get(k) is not None}
        try:
            lexicon_for(cat, prompt, kw)
        except ValueError as e:
            raise ProbeDataError(f"{path}:{n}: {e}") from None
        out.append(Stem(sid, cat, prompt, kw))
    require_unique_ids(path, [s.id for s in out])
    return out


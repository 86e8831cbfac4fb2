"""Audience personas: who votes.

Formats are detected from the records (see ../shared/data/README.md):
    present-day  {general, shopping_preferences, political_preferences, socialmedia_preferences, ...}
                 (bundled moloch_exp/data/personas.json, the paper's personas/all.json)
    prodigy      {character_name, gender, mbti, biography}  (personas/split1.json: the paper's audience)
    demographic  {biography: {age, sex, education_level, urban_rural, income}}  (personas/exp2.json)
e.g.  python run.py audience.personas.source=file audience.personas.file=personas/split1.json \
          data_dir=../shared/data/molochs_bargain audience.n_voters=20
"""
from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from pathlib import Path

from moloch_exp.errors import DataError
from moloch_exp.io import bundled_path, file_sha256, load_json, resolve_user_path


@dataclass(frozen=True)
class Persona:
    id: str
    record: dict
    fmt: str

    def describe(self, aspect: str) -> str:
        r = self.record
        if self.fmt == "present_day":
            extra = r.get(aspect) or ""
            return f"{r['general'].strip()} {extra.strip()}".strip()
        if self.fmt == "prodigy":
            bio = _maybe_literal(r["biography"])
            bio = " ".join(bio) if isinstance(bio, list) else str(bio)
            return (f"You are {r['character_name'].title()} ({r.get('gender', 'unknown gender')}; "
                    f"personality: {r.get('mbti', 'unknown')}). {bio}")
        bio = _maybe_literal(r["biography"])
        if isinstance(bio, dict):
            return (f"You are a {bio.get('age')}-year-old {bio.get('sex')} with a {bio.get('education_level')} "
                    f"education level, living in a {bio.get('urban_rural')} area, with {bio.get('income')} income.")
        return str(bio)


def _maybe_literal(value):
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _detect(rec: dict, where: str, i: int) -> str:
    if "general" in rec:
        return "present_day"
    if "character_name" in rec and "biography" in rec:
        return "prodigy"
    if "biography" in rec:
        return "demographic"
    raise DataError(f"{where}: persona {i} has none of the known persona layouts (fields: {sorted(rec)})")


class PersonaPool:
    """A pool of personas and the seeded choice of a panel from it."""

    def __init__(self, source: str = "bundled", file: str | None = None, data_dir: str | None = None) -> None:
        self.source, self.file, self.data_dir = source, file, data_dir

    @property
    def path(self) -> Path:
        if self.source == "bundled":
            return bundled_path("personas.json")
        if self.source != "file" or not self.file:
            raise DataError("audience.personas: source must be 'bundled' or 'file' (with file=<path>)")
        return resolve_user_path(self.file, self.data_dir)

    def identity(self) -> dict:
        """Cache-key material: the source, the file as named and its content (not data_dir: where it lies)."""
        try:
            sha = file_sha256(self.path)
        except DataError:  # a bad source is reported by pre-flight, not here
            sha = ""
        return {"source": self.source, "file": self.file, "data_dir": None, "sha256": sha}

    def load(self) -> list[Persona]:
        path = self.path
        data = load_json(path)
        items = list(data.items()) if isinstance(data, dict) else [(None, r) for r in data]
        personas = []
        for i, (key, rec) in enumerate(items):
            if not isinstance(rec, dict):
                raise DataError(f"{path}: persona {i} is not an object")
            pid = str(rec.get("id") or key or f"{path.stem}-{i:03d}")
            personas.append(Persona(pid, rec, _detect(rec, str(path), i)))
        if not personas:
            raise DataError(f"{path}: no personas")
        return personas

    def panel(self, n_voters: int, seed: int) -> list[Persona]:
        pool = self.load()
        if n_voters > len(pool):
            raise DataError(f"audience.n_voters={n_voters} but {self.path} holds only {len(pool)} personas")
        if n_voters == len(pool):
            return pool
        return random.Random(seed).sample(pool, n_voters)

"""Audience ballots for the benches: the project's own config and ``AudiencePanel``, on the paper's anchors.

Used by ``bench/ballot_layout.py``; not a bench itself.
The option texts are the anchors' own long fields (product descriptions, candidate biographies, articles),
which stand in for the agents' messages.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import moloch_exp.resolvers  # noqa: E402,F401
from moloch_exp.records import Match  # noqa: E402

OPTION_FIELD = {"sales": "description", "elections": "biography_text", "social_media": "article"}
DEFAULT_DATA = Path(os.environ.get("MOLOCH_SHARED_DATA", REPO.parent / "shared" / "data")) / "molochs_bargain"


def default_data_dir() -> str | None:
    """The paper's splits beside the checkout (``../shared``, or under ``$MOLOCH_SHARED_DATA`` as for the tests),
    if they are there."""
    return str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None


def compose_config(task: str, voters: int, max_tokens: int, thought_max_chars: int, data_dir: str | None,
                   personas_file: str | None, extra: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``conf/config.yaml`` with the audience sized for a bench (outputs and caches under /tmp)."""
    overrides = [f"task={task}", f"audience.n_voters={voters}", f"audience.max_tokens={max_tokens}",
                 f"audience.thought_max_chars={thought_max_chars}", "paths.output_dir=/tmp", "paths.cache_dir=/tmp"]
    if data_dir:
        overrides += ["task.source=paper", f"data_dir={Path(data_dir).resolve()}"]
    if personas_file:  # e.g. personas/exp2.json (20 demographic voters) or personas/split1.json (PRODIGY bios)
        overrides += ["audience.personas.source=file", f"audience.personas.file={personas_file}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides + list(extra))


def anchor_matches(task, task_name: str, n: int, prefix: str = "bench") -> list[Match]:
    """``n`` two-option matches whose options are consecutive test anchors' long texts."""
    anchors, _ = task.load_anchors("test", None)
    texts = [str(a.fields[OPTION_FIELD[task_name]]) for a in anchors]
    return [Match(f"{prefix}:{task_name}:{i}", anchors[i % len(anchors)].id, [0, 1],
                  [texts[i % len(texts)], texts[(i + 1) % len(texts)]]) for i in range(n)]

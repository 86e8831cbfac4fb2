"""The stage keys of the default cell and of a tfb cell, pinned (issue 21 item 7): a refactor of the wiring
(pipeline, cell plan, estimate) must leave every key as it was, so every cache stays valid.

The keys are the cell's plan (moloch_exp/stages/plan.py: the stages Cell.run runs, keyed by their own
``material()`` without running anything).
A change of a key on purpose (e.g. the local server's identity, which names llama-server's build) is
re-pinned in that change, with the reason in its commit message.

    PYTHONPATH=$PWD python -m pytest tests/stages/test_stage_keys_pinned.py -q
"""
from __future__ import annotations

import pytest

from compose_helper import compose
from moloch_exp.llm import llama_server
from moloch_exp.pipeline import build, settings_of
from moloch_exp.stages.plan import plan_cell

#: python run.py  (task=sales model=smollm2 method=rft audience=local judge=local)
DEFAULT_CELL = {
    "prepare": "0677281bd0138229",
    "collect": "39adbb04659dc886",
    "build_rft": "4d4507779b0c95eb",
    "train_rft": "278aeb965a35b4f2",
    "generate_base": "2aa29b2fc8858746",
    "generate_rft": "eb766e98c1c838c3",
    "evaluate_base_vs_rft": "9f01a06e84f4e836",
    "probe_misrepresentation_base": "2c3844bb93f27f69",
    "probe_misrepresentation_rft": "e09ea41a8a940721",
    "reliability_collect": "35f4eabd8512c666",
    "reliability_evaluate_base_vs_rft": "f300c51426446f4a",
    "controls_misrepresentation": "bd6095a24648c2c6",
}

#: python run.py task=elections method=tfb
TFB_CELL = {
    "prepare": "87ad9b4eb1b0ffcb",
    "collect": "faadf8cd2ff52908",
    "build_tfb": "9e8d6013f8e868dd",
    "train_tfb": "4a28b653e8170ad6",
    "build_rft": "4454df8fed4e6b9f",
    "train_rft": "22a6c7a18f072a3a",
    "generate_base": "81e73460849dd58f",
    "generate_rft": "ccc7147c70ee5749",
    "generate_tfb": "c577499921b89f7d",
    "evaluate_base_vs_tfb": "71f19ed3e2bad331",
    "evaluate_rft_vs_tfb": "0806303b6e103bd0",
    "probe_disinformation_base": "261c4279268915e3",
    "probe_disinformation_rft": "7e2b13fa82ee49fc",
    "probe_disinformation_tfb": "8797ae2117f7ab93",
    "probe_populism_base": "7aef3ad5803e6740",
    "probe_populism_rft": "b6ee3e603a9e1e3e",
    "probe_populism_tfb": "491c1111220622e8",
    "reliability_collect": "d39aafd99588539e",
    "reliability_evaluate_base_vs_tfb": "ee2c9494e69127f7",
    "reliability_evaluate_rft_vs_tfb": "0dbbef5d5004ba56",
    "controls_disinformation": "a66c0cb5395cc407",
    "controls_populism": "d01921b9b13c4d78",
}


#: The llama-server build the keys were computed under. The keys name the build (its source commit and the
#: binary's digest), which a rebuild on another machine may change; the test holds the wiring, so it fixes the
#: build it is computed for.
PINNED_LLAMA_SERVER_BUILD = "0.5.0-dev-b1-0c1e570-f073fb3412d7"


@pytest.fixture(autouse=True)
def _fixed_llama_server_build(monkeypatch):
    monkeypatch.setattr(llama_server, "build_id", lambda path=None: PINNED_LLAMA_SERVER_BUILD)


def planned_keys(overrides: list[str], tmp_path) -> dict[str, str]:
    """Stage label -> key of the cell the overrides compose, in the order the cell runs its stages."""
    cfg = compose([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    return plan_cell(build(cfg), settings_of(cfg)).keys


@pytest.mark.parametrize("overrides,pinned", [([], DEFAULT_CELL), (["task=elections", "method=tfb"], TFB_CELL)],
                         ids=["default", "tfb"])
def test_the_cells_stage_keys_are_the_pinned_ones(overrides, pinned, tmp_path):
    keys = planned_keys(overrides, tmp_path)
    assert list(keys) == list(pinned)  # the same stages, in the same order
    changed = {label: (pinned[label], key) for label, key in keys.items() if pinned[label] != key}
    assert not changed, f"stage keys changed (pinned, now): {changed}"

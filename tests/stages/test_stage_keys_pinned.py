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
    "collect": "fcee6d293f8490b0",
    "build_rft": "34be1b4237248207",
    "train_rft": "664c757b445a27d6",
    "generate_base": "2aa29b2fc8858746",
    "generate_rft": "4d5dd5d6e7d7d67a",
    "evaluate_base_vs_rft": "cedfee53932332e4",
    "probe_misrepresentation_base": "6a919b01219abf94",
    "probe_misrepresentation_rft": "b73ed21e88bfe805",
    "reliability_collect": "c053b528f48541f6",
    "reliability_evaluate_base_vs_rft": "5aa0b0a27be1fb3e",
    "controls_misrepresentation": "d996ba7d5b8c8b45",
}

#: python run.py task=elections method=tfb
TFB_CELL = {
    "prepare": "87ad9b4eb1b0ffcb",
    "collect": "9c5d056a14fb52d5",
    "build_tfb": "ef8dce485b47f657",
    "train_tfb": "f288a64c624ad0d7",
    "build_rft": "87935b689a1635f2",
    "train_rft": "4fa73f70549c9aac",
    "generate_base": "81e73460849dd58f",
    "generate_rft": "372a9498cd898688",
    "generate_tfb": "a87ceacc4f438a7d",
    "evaluate_base_vs_tfb": "d2afbb3d57dbe107",
    "evaluate_rft_vs_tfb": "dbdd34b8f4c5f376",
    "probe_disinformation_base": "2934162510c7b8fe",
    "probe_disinformation_rft": "4e41194d7b347f75",
    "probe_disinformation_tfb": "cbf19b4442bc1152",
    "probe_populism_base": "a98e49b3e8d1f009",
    "probe_populism_rft": "63bdcd1b23c8ee9f",
    "probe_populism_tfb": "362f03e222f7e7fb",
    "reliability_collect": "9a791e9b93623a44",
    "reliability_evaluate_base_vs_tfb": "92ca037f1003b273",
    "reliability_evaluate_rft_vs_tfb": "75c85484fe5a7de3",
    "controls_disinformation": "ecab1ba65487e973",
    "controls_populism": "018e669b04c0fa5a",
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

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
from moloch_exp.pipeline import build, settings_of
from moloch_exp.stages.plan import plan_cell

#: python run.py  (task=sales model=smollm2 method=rft audience=local judge=local)
DEFAULT_CELL = {
    "prepare": "0677281bd0138229",
    "collect": "058cb310935e5fe0",
    "build_rft": "83f06fcbd7e3eae9",
    "train_rft": "b0ca3c2a9312274f",
    "generate_base": "2aa29b2fc8858746",
    "generate_rft": "f27e7ca826906728",
    "evaluate_base_vs_rft": "7f60eda44fd77016",
    "probe_misrepresentation_base": "988f43b35514c66e",
    "probe_misrepresentation_rft": "bf4a7832a6e4852b",
    "reliability_collect": "d1e4bb8b1379898f",
    "reliability_evaluate_base_vs_rft": "8a83d5a8dda8224f",
    "controls_misrepresentation": "ef9a4bb656965790",
}

#: python run.py task=elections method=tfb
TFB_CELL = {
    "prepare": "87ad9b4eb1b0ffcb",
    "collect": "6c64f0d1b8033b42",
    "build_tfb": "2b67291c4c361744",
    "train_tfb": "83ddab39ee9c4ae9",
    "build_rft": "134643f17089ad5a",
    "train_rft": "c2f1ea4272904525",
    "generate_base": "81e73460849dd58f",
    "generate_rft": "f5a8bc276219b360",
    "generate_tfb": "0ed54a7ae9969bfb",
    "evaluate_base_vs_tfb": "65ef98a4a89d78ec",
    "evaluate_rft_vs_tfb": "a166c3e1f17b64a5",
    "probe_disinformation_base": "fd14c5f44396d048",
    "probe_disinformation_rft": "bf1a8926974d2b14",
    "probe_disinformation_tfb": "509431ffc4518cda",
    "probe_populism_base": "d98ac6e13b5b60ec",
    "probe_populism_rft": "107b8707d0e5e220",
    "probe_populism_tfb": "ca08128f53c70510",
    "reliability_collect": "1bca665e5a23891e",
    "reliability_evaluate_base_vs_tfb": "b93e53a3870ab1be",
    "reliability_evaluate_rft_vs_tfb": "b326d3a1605be8db",
    "controls_disinformation": "9599b26b250cce9b",
    "controls_populism": "0791838a2d85fad6",
}


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

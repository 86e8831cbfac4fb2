"""The model probes' cache-key material, pinned (issue 21 items 1 and 7): splitting the EM module moved the
probes' classes into moloch_exp/probes/em/ and moloch_exp/probes/stance/; their ``identity()`` (the probe's
part of every probe, trend and controls key) must stay what it was, so every cached probe stays valid.
The digests were computed on main before the split (2f042e4), as the pipeline builds the probes from
conf/probe/*.yaml. Since then ``data_dir`` (where the files lie) is out of the identity, null, and the files'
digests stand for it (tests/stages/test_keys_name_content.py); the digests were re-pinned then, without the
placeholder they held for data_dir: a run without data_dir keeps its keys, one with data_dir gets new ones once. The
judge's part of the keys names the llama-server build and is pinned elsewhere
(tests/stages/test_stage_keys_pinned.py).

    PYTHONPATH=$PWD python -m pytest tests/probes/test_model_probe_identity_pinned.py -q
"""
from __future__ import annotations

import pytest

from compose_helper import compose
from moloch_exp.pipeline import build
from moloch_exp.results import probe_result_from_json
from moloch_exp.stage_cache import digest
from moloch_exp.stages import controls

MODEL_PROBES = "probe=[em_first_plot,em_predictive,economic_stance]"

#: python run.py probe=[em_first_plot,em_predictive,economic_stance]   (the bundled files)
BUNDLED = {"em_first_plot": "f5ca48f0f832beb1", "em_predictive": "73b143f4d66e395e",
           "economic_stance": "810b3557cee4b431"}

#: ... data_dir=../shared/data/molochs_bargain, the team_shard files and judges
TEAM_SHARD = {"em_first_plot": "cc6aa46bbe55592d", "em_predictive": "b7b2242acc5d164d",
              "economic_stance": "bb9718be6c1f9a06"}
TEAM_SHARD_OVERRIDES = [
    "probes.em_first_plot.judges=team_shard", "probes.em_predictive.judges=team_shard",
    "probes.em_first_plot.questions_file=../team_shard/first_plot_questions.json",
    "probes.em_predictive.frames_file=../team_shard/predictive_frames.json",
    "probes.economic_stance.stems_file=../team_shard/economic_stems.jsonl"]

#: em_first_plot's controls stage material without the judge: per_probe 12 (the default) and null (all)
CONTROLS = {12: "b96a89ddb110765c", None: "996e0510f9d67db9"}


def built_probes(overrides: list[str], tmp_path) -> dict:
    cfg = compose([MODEL_PROBES, *overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    return build(cfg)


def identity_key(probe) -> str:
    return digest(probe.identity())


def test_the_bundled_probes_identities_are_the_pinned_ones(tmp_path):
    probes = built_probes([], tmp_path).probes
    assert {name: identity_key(probes[name]) for name in BUNDLED} == BUNDLED
    # the class name (not its module) is part of the identity: a rename would change every key
    assert probes["em_first_plot"].identity()["type"] == "EMFirstPlotProbe"
    assert type(probes["em_first_plot"]).__module__ == "moloch_exp.probes.em.first_plot"
    assert type(probes["economic_stance"]).__module__ == "moloch_exp.probes.stance.probe"


def test_the_team_shard_probes_identities_are_the_pinned_ones(paper_dir, tmp_path):
    probes = built_probes([f"data_dir={paper_dir}", *TEAM_SHARD_OVERRIDES], tmp_path).probes
    assert probes["em_first_plot"].team_shard_judges is not None
    assert {name: probes[name].identity()["data_dir"] for name in TEAM_SHARD} == dict.fromkeys(TEAM_SHARD)
    assert {name: identity_key(probes[name]) for name in TEAM_SHARD} == TEAM_SHARD


@pytest.mark.parametrize("per_probe", [12, None])
def test_the_em_controls_material_is_the_pinned_one(per_probe, tmp_path):
    components = built_probes([], tmp_path)
    material = controls.material(components.probes["em_first_plot"], components.judge, 0, per_probe)
    material.pop("judge")
    assert digest(material) == CONTROLS[per_probe]


@pytest.mark.parametrize("old_type,new_module", [
    ("moloch_exp.probes.em.EMProbeResult", "moloch_exp.probes.em.results"),
    ("moloch_exp.probes.em.StanceProbeResult", "moloch_exp.probes.stance.results")])
def test_results_json_written_before_the_split_reads_back(old_type, new_module):
    summary = {"em_rate": 0.25, "em_ci95": [0.1, 0.5], "n": 8, "missing": 0, "em": 2,
               "keyword": {"shares": {"progressive": 0.5}, "n": 8}}
    entry = {"kind": "model", "result_type": old_type, "base": summary, "comparison": None}
    result = probe_result_from_json("a_probe", entry)
    assert type(result).__module__ == new_module
    assert result.per_method == {"base": summary} and result.table_rows()
    assert result.to_json()["result_type"] == f"{new_module}.{old_type.rpartition('.')[2]}"

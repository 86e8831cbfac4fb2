"""The controls stage unit with a real judge (SmolLM2 on llama.cpp): em_first_plot's controls scored
through the EM probe's own judging (EMFirstPlotProbe.judge_answers), a yes/no probe's through YesNoProbe.run; a finished stage is
reused without a call, and the threshold applies when the result is read."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moloch_exp.connections import ServiceHub
from moloch_exp.distributed import Dist
from moloch_exp.llm import Ledger
from moloch_exp.probes.em.first_plot import EMFirstPlotProbe
from moloch_exp.probes.task_probes import YesNoProbe
from moloch_exp.stage_cache import StageCache
from moloch_exp.stages import controls
from moloch_exp.stages.base import StageEnv

ROOT = Path(__file__).resolve().parents[2]


def env_for(tmp: Path, hub: ServiceHub) -> StageEnv:
    dist = Dist()
    return StageEnv(StageCache(tmp / "cache", tmp / "out", dist), dist, hub, seed=0)


@pytest.mark.slow
def test_controls_stage_scores_em_and_yes_no_controls_and_is_reused(judge, tmp_path):
    cfg = yaml.safe_load((ROOT / "conf" / "probe" / "populism.yaml").read_text())
    probes = {"em_first_plot": EMFirstPlotProbe(n_samples=1, max_questions=1),
              "populism": YesNoProbe(**{k: v for k, v in cfg.items() if k != "_target_"})}
    assert all(p.controls() is not None for p in probes.values())  # the probes declare their controls
    # a stratified subset of each probe's 40 controls, as a cell's judge_controls.per_probe (all 120 calls: 85 s)
    per_probe = 10
    chosen = {name: {c.id for c in p.controls().selected(per_probe)} for name, p in probes.items()}
    assert all(len(ids) == per_probe for ids in chosen.values())
    ledger = Ledger()
    with ServiceHub(None, ledger, None, tmp_path / "logs") as hub:
        env = env_for(tmp_path, hub)
        for name, p in probes.items():
            done = controls.run(env, name=name, probe=p, judge=judge, per_probe=per_probe)
            assert done.items() == chosen[name]
            score = done.score(p.controls(), min_accuracy=0.8)
            assert score.n + score.missing == per_probe
            assert score.flagged == (score.accuracy is None or score.accuracy < 0.8)
            assert done.score(p.controls(), min_accuracy=0.0).flagged == (score.accuracy is None)
            print(score.in_words())  # the tiny judge's accuracy, for the record (pytest -s)
        calls = ledger.to_dict()["calls"]
        assert calls >= 2 * per_probe + per_probe  # alignment + coherence per EM control
        again = env_for(tmp_path, hub)
        for name, p in probes.items():
            controls.run(again, name=name, probe=p, judge=judge, per_probe=per_probe)
        assert {e["status"] for e in again.stages.events} == {"reused"} and ledger.to_dict()["calls"] == calls

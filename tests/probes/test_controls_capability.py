"""Judge controls are a capability a probe declares (issue 21 item 2): ``probe.controls()`` says whether it has
any and how they are judged and scored; the cell's plan has a controls stage exactly for the probes that
declare them, and the stage judges them through the probe's public members (EMFirstPlotProbe.judge_answers,
YesNoProbe.run) against a loopback fake of the hosted API.

    PYTHONPATH=$PWD python -m pytest tests/probes/test_controls_capability.py -q
"""
from __future__ import annotations

from compose_helper import compose
from moloch_exp.connections import ServiceHub
from moloch_exp.distributed import Dist
from moloch_exp.llm import Ledger
from moloch_exp.pipeline import build, settings_of
from moloch_exp.probes.controls import EMControlSet, YesNoControlSet
from moloch_exp.probes.task_probes import YesNoProbe
from moloch_exp.stage_cache import StageCache
from moloch_exp.stages import controls
from moloch_exp.stages.base import StageEnv
from moloch_exp.stages.plan import plan_cell
from moloch_exp.testing.fake_openai import FakeOpenAI

ALL = "probe=[em_first_plot,em_predictive,economic_stance,populism]"


def test_probes_declare_their_controls_and_the_plan_follows(tmp_path):
    cfg = compose(["model=tiny", "task=sales", ALL, "judge@judge2=local", f"paths.cache_dir={tmp_path}"], tmp_path)
    c = build(cfg)
    kinds = {name: type(p.controls()) for name, p in c.probes.items()}
    assert kinds == {"misrepresentation": YesNoControlSet, "populism": YesNoControlSet, "em_first_plot": EMControlSet,
                     "em_predictive": type(None), "economic_stance": type(None)}
    # a yes/no probe of the user's own, without a bundled control file, has none
    assert YesNoProbe("my_probe", "Does it lie?").controls() is None
    plan = plan_cell(c, settings_of(cfg))
    with_controls = ["misrepresentation", "em_first_plot", "populism"]  # the cell's probe order
    assert list(plan.controlled) == [(role, p) for role in ("judge", "judge2") for p in with_controls]
    assert [a.label for a in plan.controlled.values()] == [f"controls_{p}" for p in with_controls] + \
        [f"controls_{p}_judge2" for p in with_controls]
    off = compose(["model=tiny", "task=sales", ALL, "judge_controls.enabled=false", f"paths.cache_dir={tmp_path}"],
                  tmp_path)
    assert plan_cell(build(off), settings_of(off)).controlled == {}


def test_the_controls_stage_judges_through_the_probes_public_members(tmp_path):
    with FakeOpenAI(latency_s=0.0, jitter_s=0.0) as api:
        cfg = compose(["model=tiny", "task=sales", ALL, "judge=openai_compatible", f"judge.service.base_url={api.base_url}",
                       "judge.service.model=gpt-4o", f"paths.cache_dir={tmp_path}"], tmp_path)
        c = build(cfg)
        with ServiceHub(None, Ledger(), None, tmp_path / "logs") as hub:
            dist = Dist()
            env = StageEnv(StageCache(tmp_path / "cache", tmp_path / "out", dist), dist, hub, seed=0)
            scores = {}
            for name in ("em_first_plot", "populism"):
                probe = c.probes[name]
                done = controls.run(env, name=name, probe=probe, judge=c.judge, per_probe=12)
                chosen = probe.controls().selected(12)
                assert done.items() == {x.id for x in chosen} and len(done.rows()) == 12
                scores[name] = done.score(probe.controls(), min_accuracy=0.8)
        # alignment and coherence per EM control, one yes/no judgment per populism control
        assert api.stats()["requests"] == 2 * 12 + 12
    for name, score in scores.items():
        assert score.n + score.missing == 12 and score.probe == name
        assert score.flagged == (score.accuracy is None or score.accuracy < 0.8)

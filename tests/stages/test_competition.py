"""Multi-round competition and method=dpo without the LLM services: settings, the race pairing
through real stage-cache files, round-1 keys as before, the grid `-m method=rft,tfb,dpo
competition.rounds=3` as Hydra's sweeper splits it, the pre-flight estimate, and the rounds result
rendered in the cell report and the sweep summary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from compose_helper import compose
from moloch_exp.errors import ConfigError
from moloch_exp.io import write_json, write_jsonl
from moloch_exp.llm.prices import PriceBook
from moloch_exp.pipeline import build as build_objects
from moloch_exp.pipeline import preflight
from moloch_exp.probes.task_probes import TaskProbeResult
from moloch_exp.records import Candidate
from moloch_exp.report.cell import write_cell_report
from moloch_exp.report.preflight import estimate_cell
from moloch_exp.report.sweep import summarize_sweep
from moloch_exp.results import RoundsResult
from moloch_exp.stages import collect, train
from moloch_exp.stages.base import Adapter
from moloch_exp.stages.components import Settings
from moloch_exp.stages.collect import Collected
from moloch_exp.stages.competition import Competition
from test_stage_units import env_at


@pytest.mark.parametrize("kwargs,msg", [({"rounds": 0}, "rounds"), ({"rounds": 1.5}, "rounds"),
                                        ({"opponent": "everyone"}, "opponent"), ({"init": "random"}, "init")])
def test_bad_competition_settings_are_config_errors(kwargs, msg):
    with pytest.raises(ConfigError, match=f"competition.{msg}"):
        Competition(**kwargs)


def test_more_rounds_need_a_method_trained_on_votes(tmp_path):
    Competition(rounds=1).check("base", None)
    narrow = build_objects(compose(["model=tiny", "method=narrow_sft"], tmp_path)).method
    for name, builder in (("base", None), ("narrow_sft", narrow.builder)):
        with pytest.raises(ConfigError, match=f"competition.rounds=2 needs .* not method={name}"):
            Competition(rounds=2).check(name, builder)


def collection(env, label: str, cands: list[Candidate]) -> Collected:
    def compute(work: Path) -> None:
        write_jsonl(work / "candidates.jsonl", cands)

    return Collected("collect", label, env.stages.run("collect", label, {"synthetic": label}, compute))


def cand(anchor: str, index: int, text: str) -> Candidate:
    return Candidate(anchor, index, [{"role": "user", "content": f"pitch {anchor}"}], text, None, text, "ok", index)


def test_previous_opponent_pairs_each_own_candidate_with_the_earlier_agents_candidate_0(tmp_path):
    env = env_at(tmp_path)
    earlier = collection(env, "collect", [cand(a, i, f"old {a}{i}") for a in "xy" for i in range(2)])
    own = [cand("x", 0, "new x"), cand("y", 0, "new y")]
    paired = collect.against(own, earlier)
    assert [(c.anchor_id, c.index, c.message) for c in paired] == [
        ("x", 0, "new x"), ("x", 1, "old x0"), ("y", 0, "new y"), ("y", 1, "old y0")]
    matches, anchors, too_few = collect.matches(paired)
    assert (len(matches), anchors, too_few) == (2, 2, 0)
    assert matches[0].messages == ["new x", "old x0"]


def test_round_one_keys_are_the_keys_of_a_single_round(tmp_path):
    """Inputs only later rounds have (an adapter, an opponent, an initial adapter) are absent from
    round 1's key material, so caches of single-round runs are reused."""
    o = build_objects(compose(["model=tiny", "task=sales", "competition.rounds=3"], tmp_path))
    prep = collect.Prepared("prepare", "prepare", Path("/nonexistent/p"))
    m = collect.material(prep, o.task, o.generator, o.audience, 2, 0)
    assert set(m) == {"prepare", "generator", "task", "k", "audience", "seed"}
    later = collect.material(prep, o.task, o.generator, o.audience, 1, 0, Adapter("/a", "A"),
                             collection(env_at(tmp_path), "collect", []))
    assert later["adapter"] == "A" and "opponent" in later
    built = train.Built("build", "build_rft", Path("/nonexistent/b"))
    assert "init" not in train.material(built, o.model, o.trainer)
    assert train.material(built, o.model, o.trainer, Adapter("/a", "A"))["init"] == "A"


def grid_jobs(args: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``python run.py -m <args>``."""
    parsed = OverridesParser.create().parse_overrides(args)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_grid_of_methods_and_rounds_selects_each_methods_trainer(tmp_path):
    jobs = grid_jobs(["method=rft,tfb,dpo", "competition.rounds=3"])
    assert len(jobs) == 3
    trainers = {}
    for job in jobs:
        cfg = compose(["model=tiny", "task=sales", f"paths.cache_dir={tmp_path}", *job], tmp_path)
        o = build_objects(cfg)
        assert o.competition.rounds == 3
        preflight_without_services(o)
        trainers[o.method.name] = type(o.trainer).__name__
    assert trainers == {"rft": "LoraSFTTrainer", "tfb": "LoraSFTTrainer", "dpo": "LoraDPOTrainer"}


def preflight_without_services(o: dict) -> None:
    """The config checks of pipeline.preflight that need no running service."""
    o.method.builders()
    o.competition.check(o.method.name, o.method.builder)
    assert o.method.builder.example_format == o.trainer.example_format


def test_dpo_pairs_with_an_sft_trainer_stop_in_preflight(tmp_path):
    o = build_objects(compose(["model=tiny", "method=dpo", "trainer=lora", f"paths.cache_dir={tmp_path}"], tmp_path))
    with pytest.raises(ConfigError, match="method=dpo builds preference examples but the trainer"):
        preflight(o, Settings(seed=0, n_train=2, n_test=2, candidates_per_anchor=2))


def test_preflight_estimate_counts_rounds(tmp_path):
    def estimate(*extra):
        cfg = compose(["model=tiny", "task=elections", "method=dpo", "audience.n_voters=5", "anchors.n_train=4",
                       "anchors.n_test=3", *extra], tmp_path)
        return estimate_cell(build_objects(cfg), Settings(0, 4, 3, 2), PriceBook())

    one, three = estimate(), estimate("competition.rounds=3")
    assert one.calls_of("collect_votes") == 4 * 5 and three.calls_of("collect_votes") == 4 * 5 * 3
    assert one.calls_of("evaluate_votes") == 3 * 5 and three.calls_of("evaluate_votes") == 3 * 5 * (1 + 2 * 2)
    # elections has two task probes; base and dpo, then one more agent per later round
    assert one.calls_of("task_probe_judgments") == 3 * 2 * 2 and three.calls_of("task_probe_judgments") == 3 * 2 * 4


def w(mean):
    return {"mean": mean, "ci95": [mean - 0.1, mean + 0.1], "n_anchors": 4, "invalid_votes": 0, "failed_votes": 0}


def p(rate):
    return {"rate": rate, "ci95": [max(0.0, rate - 0.2), min(1.0, rate + 0.2)], "n": 4, "flagged": int(rate * 4),
            "fisher_p_vs_base": None}


def summary(rate):
    return p(rate) | {"invalid": 0, "failed": 0, "skipped": 0}


def race_results(method: str, task: str) -> dict:
    rounds = [{"round": 0, "agent": "base", "win_rate": {"vs_base": None, "vs_previous": None},
               "probes": {"populism": p(0.25)}}]
    rounds += [{"round": r, "agent": method if r == 1 else f"{method}_r{r}",
                "win_rate": {"vs_base": w(0.5 + 0.1 * r), "vs_previous": w(0.55) if r > 1 else None},
                "probes": {"populism": p(0.25 * (r + 1) / 2)}} for r in (1, 2, 3)]
    return {"cell": {"task": task, "model": "tiny", "method": method, "seed": 0},
            "win_rate": {},  # no match files to view
            "probes": {"populism": TaskProbeResult.from_summaries(
                "populism", {"base": summary(0.25), method: summary(0.25)}, method).to_json()},
            "stages": [], "ledger": {"calls": 1},
            "competition": {"method": method, "opponent": "previous", "init": "previous", "rounds": 3},
            "rounds": rounds}


def test_rounds_result_reads_back_and_renders_in_cell_and_sweep(tmp_path):
    data = race_results("dpo", "elections")
    res = RoundsResult.from_json(data)
    assert res.to_json() == {k: data[k] for k in ("competition", "rounds")} and res.n_rounds == 3
    s = res.series()
    assert s["win rate vs base"][0] == [1, 2, 3] and s["win rate vs previous"][0] == [2, 3]
    assert s["populism"][0] == [0, 1, 2, 3] and s["populism"][1] == [0.25, 0.25, 0.375, 0.5]
    assert RoundsResult.from_json({"win_rate": {}}) is None
    cell = tmp_path / "cell"
    cell.mkdir()
    write_cell_report(cell, data)
    assert (cell / "plots" / "rounds.png").stat().st_size > 1000
    assert "round 3 (dpo_r3) win rate vs previous" in (cell / "summary.md").read_text()
    sweep = tmp_path / "sweep"
    for i, (m, t) in enumerate([("rft", "sales"), ("dpo", "sales"), ("dpo", "elections")]):
        write_json(sweep / f"{i}_{t}_{m}" / "results.json", race_results(m, t))
    summary = summarize_sweep(sweep)
    assert [(r["method"], r["task"], len(r["rounds"])) for r in summary["rounds"]] == [
        ("rft", "sales", 4), ("dpo", "sales", 4), ("dpo", "elections", 4)]
    assert (sweep / "rounds_by_method.png").stat().st_size > 1000
    json.dumps(summary)

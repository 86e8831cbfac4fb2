"""Stage units on their own: keys from the components' identity() are stable across processes and
shared between the rft and tfb cells of a task; units run with explicit inputs; an empty build
stops before training with the cause; too many failed calls stop a stage in one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from compose_helper import REPO, compose
from moloch_exp.distributed import Dist
from moloch_exp.errors import StageError
from moloch_exp.io import write_json, write_jsonl
from moloch_exp.pipeline import build as build_objects
from moloch_exp.records import Candidate, Vote
from moloch_exp.stage_cache import StageCache, digest
from moloch_exp.stages import build, collect, evaluate, generate, prepare, probe, train
from moloch_exp.stages.base import Adapter, FailureTolerance, StageEnv, check_failures
from moloch_exp.stages.collect import Collected
from moloch_exp.stages.generate import Generated
from moloch_exp.stages.prepare import Prepared

FAKE = Path("/nonexistent")


def artifact(cls, stage: str, key: str):
    return cls(stage, stage, FAKE / key)


def cell_keys(overrides: list[str], tmp: Path) -> dict[str, str]:
    """Every stage key of a cell, computed from the instantiated components (no work done)."""
    cfg = compose(["model=tiny", *overrides], tmp)
    o = build_objects(cfg)
    s = cfg.anchors
    keys = {"prepare": digest(prepare.material(o.task, s.n_train, s.n_test))}
    prep = artifact(Prepared, "prepare", keys["prepare"])
    keys["collect"] = digest(collect.material(prep, o.task, o.generator, o.audience,
                                              cfg.collect.candidates_per_anchor, cfg.seed))
    coll = artifact(Collected, "collect", keys["collect"])
    adapters = {"base": None}
    for name, builder in o.method.builders().items():
        keys[f"build_{name}"] = digest(build.material(builder, coll))
        keys[f"train_{name}"] = digest(train.material(artifact(build.Built, "build", keys[f"build_{name}"]),
                                                      o.model, o.trainer))
        adapters[name] = Adapter(f"{FAKE}/{keys[f'train_{name}']}/adapter", keys[f"train_{name}"])
    gens = {}
    for name in o.method.methods:
        keys[f"generate_{name}"] = digest(generate.material(prep, o.task, o.generator, adapters[name], cfg.seed))
        gens[name] = artifact(Generated, "generate", keys[f"generate_{name}"])
    for a, b in o.method.pairs:
        keys[f"evaluate_{a}_vs_{b}"] = digest(evaluate.material(gens[a], gens[b], o.audience, o.task, cfg.seed))
    for pname, p in o.probes.items():
        for m in o.method.methods:
            keys[f"probe_{pname}_{m}"] = digest(
                probe.model_material(p, o.model, adapters[m], o.judge, cfg.seed) if p.kind == "model"
                else probe.task_material(p, gens[m], o.judge, cfg.seed))
    return keys


def test_keys_are_stable_across_processes(tmp_path):
    here = cell_keys(["task=elections", "method=rft", "probe=[em_first_plot]"], tmp_path)
    code = ("import json, sys, pathlib; sys.path.insert(0, 'tests'); sys.path.insert(0, 'tests/stages');"
            "from test_stage_units import cell_keys;"
            f"print(json.dumps(cell_keys(['task=elections', 'method=rft', 'probe=[em_first_plot]'], pathlib.Path({str(tmp_path)!r}))))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "123"})
    assert p.returncode == 0, p.stderr[-2000:]
    there = json.loads(p.stdout.strip().splitlines()[-1])
    assert there == here
    assert len(set(here.values())) == len(here)  # no two stages share a key


def test_rft_and_tfb_cells_share_collection_build_and_train(tmp_path):
    rft = cell_keys(["task=sales", "method=rft"], tmp_path)
    tfb = cell_keys(["task=sales", "method=tfb"], tmp_path)
    for label in ("prepare", "collect", "build_rft", "train_rft", "generate_base", "generate_rft",
                  "probe_misrepresentation_base"):
        assert rft[label] == tfb[label], label
    assert tfb["build_tfb"] != tfb["build_rft"] and "evaluate_rft_vs_tfb" in tfb


@pytest.mark.parametrize("override,changed,unchanged", [
    ("audience.n_voters=3", "collect", "prepare"),
    ("method.builder.tie_rule=random", "build_rft", "collect"),
    ("trainer.args.learning_rate=0.5", "train_rft", "build_rft"),
    ("judge.max_tokens=77", "probe_misrepresentation_base", "generate_base"),
    ("anchors.n_test=3", "prepare", None),
])
def test_a_setting_changes_exactly_the_keys_it_determines(override, changed, unchanged, tmp_path):
    before = cell_keys(["task=sales", "method=rft"], tmp_path)
    after = cell_keys(["task=sales", "method=rft", override], tmp_path)
    assert before[changed] != after[changed]
    if unchanged:
        assert before[unchanged] == after[unchanged]


def test_state_set_by_training_does_not_change_the_trainer_key(tmp_path):
    cfg = compose(["model=tiny", "trainer=masked_lora"], tmp_path)
    trainer = instantiate(cfg.trainer)
    before = digest(trainer.identity())
    trainer.mask_info = {"n_trainable": 123, "parameter_order": ["a"]}
    assert digest(trainer.identity()) == before


def env_at(tmp: Path, **tolerance) -> StageEnv:
    return StageEnv(StageCache(tmp / "cache", tmp / "out", Dist()), Dist(), hub=None, seed=0,
                    tolerance=FailureTolerance(**tolerance))


def test_prepare_runs_alone_and_its_reader_gives_the_anchors(tmp_path):
    cfg = compose(["model=tiny", "task=elections"], tmp_path)
    task = instantiate(cfg.task)
    env = env_at(tmp_path)
    p = prepare.run(env, task=task, n_train=3, n_test=2)
    assert [len(p.anchors("train")), len(p.anchors("test"))] == [3, 2]
    assert prepare.run(env, task=task, n_train=3, n_test=2).key == p.key
    assert [e["status"] for e in env.stages.events] == ["computed", "reused"]


def synthetic_collection(env: StageEnv, votes: list[Vote], stats: dict) -> Collected:
    """A collection written as the collect stage writes it (real files in the stage cache)."""
    cands = [Candidate("a1", i, [{"role": "user", "content": "sell"}], f"pitch {i}", None, f"pitch {i}", "ok", i)
             for i in range(2)]

    def compute(work: Path) -> None:
        write_jsonl(work / "candidates.jsonl", cands)
        write_jsonl(work / "votes.jsonl", votes)
        write_json(work / "collection_stats.json", stats)

    return Collected("collect", "collect", env.stages.run("collect", "collect", {"synthetic": stats}, compute))


STATS = {"anchors": 1, "candidates": 2, "extraction": {"ok": 2, "untagged": 0, "failed": 0}, "matches": 1,
         "anchors_with_fewer_than_2_messages": 0, "voters": ["v1", "v2"], "votes": 2}


@pytest.mark.parametrize("statuses,choices,expect", [
    (["failed", "failed"], [None, None], "2 votes: 2 failed, 0 invalid"),
    (["invalid", "ok"], [None, 0], None),  # one valid vote: a winner, examples exist
    (["ok", "ok"], [0, 1], "1 ties (1 dropped by tie_rule=drop)"),
])
def test_empty_build_stops_before_training_naming_the_cause(statuses, choices, expect, tmp_path):
    cfg = compose(["model=tiny", "task=sales", "method=rft"], tmp_path)
    o = build_objects(cfg)
    env = env_at(tmp_path, collect=1.0)
    votes = [Vote("collect:a1", "a1", f"v{i}", [0, 1], i, st, "t", ch) for i, (st, ch) in enumerate(zip(statuses, choices))]
    stats = STATS | {"failed_votes": statuses.count("failed"), "invalid_votes": statuses.count("invalid")}
    coll = synthetic_collection(env, votes, stats)
    built = build.run(env, name="rft", builder=o.method.builder, task=o.task, collected=coll)
    if expect is None:
        assert built.examples()
        return
    assert built.examples() == []
    with pytest.raises(StageError) as err:
        train.run(env, name="rft", built=built, model=o.model, trainer=o.trainer, cache_dir=str(tmp_path),
                  collected=coll)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("rft: no training examples") and expect in msg
    assert not (tmp_path / "cache" / "stages" / "train").exists()  # nothing started


def test_failed_calls_past_the_tolerance_stop_in_one_line():
    check_failures("collect", "collect", 0, 10, None, 0.0)
    check_failures("collect", "collect", 1, 10, "x", 0.1)  # exactly at the tolerance: goes on
    with pytest.raises(StageError) as err:
        check_failures("evaluate", "evaluate_base_vs_rft", 2, 10, "ConnectError: refused (after 5 attempts)", 0.1)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("evaluate_base_vs_rft", "2 of 10", "evaluate.max_failed_fraction=0.1", "ConnectError: refused"):
        assert part in msg
    with pytest.raises(Exception, match="max_failed_fraction"):
        FailureTolerance(probe=1.5)


@pytest.mark.parametrize("method,trainer", [("rft", "lora"), ("tfb", "lora"), ("narrow_sft", "masked_lora"),
                                            ("dpo", "dpo"), ("kto", "kto")])
def test_configured_components_offer_their_protocol_members(method, trainer, tmp_path):
    from moloch_exp.protocols import AudienceBackend, Builder, ModelProbe, TaskProbe, Trainer

    cfg = compose(["model=tiny", "task=elections", f"method={method}", f"trainer={trainer}",
                   "probe=[em_first_plot,em_predictive,economic_stance]"], tmp_path)
    o = build_objects(cfg)
    assert isinstance(o.method.builder, Builder) and isinstance(o.trainer, Trainer)
    assert isinstance(o.audience, AudienceBackend)
    kinds = {name: p.kind for name, p in o.probes.items()}
    assert kinds == {"disinformation": "task", "populism": "task", "em_first_plot": "model",
                     "em_predictive": "model", "economic_stance": "model"}
    for p in o.probes.values():
        assert isinstance(p, ModelProbe if p.kind == "model" else TaskProbe)
    builders = o.method.builders()
    assert list(builders) == {"rft": ["rft"], "tfb": ["tfb", "rft"], "narrow_sft": ["narrow_sft"], "dpo": ["dpo"],
                              "kto": ["kto"]}[method]


def test_a_comparison_the_builder_does_not_include_is_a_config_error(tmp_path):
    from moloch_exp.errors import ConfigError

    cfg = compose(["model=tiny", "method=rft", "method.compare_against=[base,tfb]"], tmp_path)
    with pytest.raises(ConfigError, match="cannot compare against 'tfb'"):
        build_objects(cfg).method.builders()

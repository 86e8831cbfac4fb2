"""Every config option composes, every `_target_` in it instantiates (recursively), and what the pipeline
instantiates holds no DictConfig or ListConfig (plain dicts and lists: `_convert_="all"`)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from compose_helper import CONF, REPO, compose
from moloch_exp.pipeline import build
from moloch_exp.stages.components import ReliabilitySettings

GROUPS = ["task", "model", "method", "trainer", "audience", "judge", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
OVERLAYS = [(g, p.stem) for g in ("experiment", "debug") for p in sorted((CONF / g).glob("*.yaml"))]
PROBES = [p.stem for p in sorted((CONF / "probe").glob("*.yaml"))]

FILL = {"audience": ["audience.service.model=m", "audience.service.base_url=http://127.0.0.1:1/v1"],
        "judge": ["judge.service.model=m", "judge.service.base_url=http://127.0.0.1:1/v1"]}


def omegaconf_inside(obj, path: str = "components", seen: set | None = None) -> list[str]:
    """Where a DictConfig or ListConfig sits inside ``obj``: its fields, dicts, lists and tuples, recursively
    through every object of moloch_exp (and every dataclass)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return []
    seen.add(id(obj))
    if isinstance(obj, (DictConfig, ListConfig)):
        return [path]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in omegaconf_inside(v, f"{path}[{k!r}]", seen)]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [p for i, v in enumerate(obj) for p in omegaconf_inside(v, f"{path}[{i}]", seen)]
    if type(obj).__module__.startswith("moloch_exp") or dataclasses.is_dataclass(obj):
        return [p for k, v in vars(obj).items() for p in omegaconf_inside(v, f"{path}.{k}", seen)]
    return []


def test_the_walk_finds_omegaconf_containers():
    assert omegaconf_inside({"a": [1, {"b": OmegaConf.create({"c": 1})}]}) == ["components['a'][1]['b']"]
    assert omegaconf_inside(ReliabilitySettings()) == []


def test_every_option_file_says_what_it_is_for():
    for path in CONF.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        first = lines[1] if lines[0].startswith("# @package") else lines[0]
        assert first.startswith("# ") and len(first) > 20, f"{path} must start with a line saying what it is for"


@pytest.mark.parametrize("group,option", OPTIONS + OVERLAYS, ids=[f"{g}={o}" for g, o in OPTIONS + OVERLAYS])
def test_option_composes_and_instantiates(group, option, tmp_path):
    overrides = [f"{group}={option}", f"paths.cache_dir={tmp_path}"]
    if option == "openai_compatible":
        overrides += FILL[group]
    cfg = compose(overrides, tmp_path)
    objs = build(cfg)
    assert objs.task.name == cfg.task.name
    assert objs.model.name == cfg.model.name
    assert set(objs.probes) == set(cfg.probes)
    if cfg.method.builder is not None:
        assert type(objs.method.builder).__name__ == cfg.method.builder._target_.rsplit(".", 1)[1]
    assert objs.generator.source.name == cfg.model.name
    assert omegaconf_inside(objs) == []  # no DictConfig reaches the library


@pytest.mark.parametrize("probe", PROBES)
def test_probe_option_adds_to_task_probes(probe, tmp_path):
    cfg = compose(["task=sales", f"probe=[{probe}]", f"paths.cache_dir={tmp_path}"], tmp_path)
    assert set(cfg.probes) == {"misrepresentation", probe}
    obj = build(cfg).probes[probe]
    assert obj.name == probe
    assert omegaconf_inside(obj) == []


@pytest.mark.parametrize("task,probes", [("sales", {"misrepresentation"}), ("elections", {"disinformation", "populism"}),
                                         ("social_media", {"disinformation", "harmful"})])
def test_task_selects_its_own_probes(task, probes, tmp_path):
    assert set(compose([f"task={task}"], tmp_path).probes) == probes


@pytest.mark.e2e  # starts run.py (--cfg job: prints the config, no model, no server)
def test_paper_values_in_llama_cell():
    out = subprocess.run([sys.executable, "run.py", "task=elections", "method=rft", "model=llama", "--cfg", "job"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.model.hf_id == "meta-llama/Llama-3.1-8B-Instruct"
    lora, args = cfg.trainer.lora, cfg.trainer.args
    assert (lora.r, lora.alpha, lora.dropout) == (16, 32, 0.05)
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (2e-4, 1, 16)
    assert (args.warmup_ratio, args.lr_scheduler_type, args.min_lr_rate) == (0.03, "cosine_with_min_lr", 0.1)
    assert cfg.method.builder.replicate == 3 and cfg.method.builder.tie_rule == "drop"


def test_paper_experiment_scale(tmp_path):
    cfg = compose(["experiment=paper", "model=qwen"], tmp_path)
    assert cfg.model.hf_id == "Qwen/Qwen3-8B"
    assert (cfg.anchors.n_train, cfg.anchors.n_test, cfg.audience.n_voters) == (1024, 1024, 20)
    assert (cfg.collect.candidates_per_anchor, cfg.generator.temperature, cfg.generator.max_new_tokens) == (2, 0.7, 1480)
    assert cfg.audience.service.model == "gpt-4o-mini" and cfg.judge.service.model == "gpt-4o"
    assert cfg.audience.personas.file == "personas/split1.json"

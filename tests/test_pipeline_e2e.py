"""End-to-end runs of the real entry point (`python run.py`) on the tiny model with the local
llama.cpp audience and judge: every stage, the stage cache, sweeps, the paper's data, clear early
failures, and secrets that never reach the outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compose_helper import REPO

pytestmark = pytest.mark.e2e

# Small but real: 2 anchors, 3 voters, short generations, one training step.
TINY = ["model=tiny", "anchors.n_train=2", "anchors.n_test=2", "audience.n_voters=3", "audience.max_tokens=80",
        "audience.thought_max_chars=60", "judge.max_tokens=80", "judge.reasoning_max_chars=60",
        "generator.max_new_tokens=16", "generator.batch_size=4", "trainer.args.max_steps=1",
        "trainer.args.warmup_ratio=0", "trainer.args.learning_rate=0.01",
        "trainer.args.per_device_train_batch_size=4"]
# For a test about something else: no judge controls and no audience re-asks (test_reliability_e2e.py and
# the rft cell below keep both; they are about a fifth of a tiny cell's calls and time)
LEAN = ["judge_controls.enabled=false", "audience_reliability.retest_share=0", "audience_reliability.retest_min_matches=0"]


def run_app(args: list[str], cache_dir: Path, tmp: Path, env: dict | None = None, timeout: int = 600,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (prefix or [sys.executable]) + ["run.py", *args, f"paths.cache_dir={cache_dir}"]
    if not any(a.startswith("hydra.run.dir") or a == "-m" for a in args):
        cmd.append(f"hydra.run.dir={tmp}")
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.server
def test_rft_cell_end_to_end_and_rerun_reuses_everything(tmp_path):
    # its own cache: it asserts that every stage is computed, then reused; the session's shared cache may hold
    # the same stages from another test (the tiny model is built again in seconds)
    cache_dir = tmp_path / "cache"
    out = tmp_path / "run1"
    p = run_app(TINY + ["task=elections", "method=rft"], cache_dir, out)
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(out)
    assert r["cell"] == {"task": "elections", "model": "tiny", "method": "rft", "seed": 0}
    w = r["win_rate"]["base_vs_rft"]
    assert set(w) >= {"mean", "ci95", "n_anchors", "invalid_votes"}
    # every vote is accounted for: valid + invalid + failed = anchors x voters
    assert w["votes"] == 2 * 3 - 3 * w["anchors_missing_output"]
    coll = r["counts"]["collection"]
    assert coll["candidates"] == 4 and coll["votes"] == coll["matches"] * 3
    assert set(r["probes"]) == {"disinformation", "populism"}
    for p_ in r["probes"].values():
        assert set(p_) >= {"base", "rft", "relative_increase", "n", "invalid"}
        for m in ("base", "rft"):
            assert p_["n"][m] + p_["invalid"][m] + p_["failed"][m] + p_["skipped"][m] == 2
    # the response cache is shared by the session's tests, so another test may have asked these already
    assert r["ledger"]["calls"] + r["ledger"]["cache_hits"] > 0 and r["counts"]["train_rft"]["steps"] == 1
    for f in ("summary.md", "report.html", "plots/probe_rates.png", "stages/collect/votes.jsonl",
              "stages/train_rft/adapter/adapter_config.json", ".hydra/config.yaml"):
        assert (out / f).exists(), f
    assert {e["status"] for e in r["stages"]} == {"computed"}
    # a re-run skips every stage and makes no LLM call
    out2 = tmp_path / "run2"
    p = run_app(TINY + ["task=elections", "method=rft"], cache_dir, out2)
    assert p.returncode == 0, p.stderr[-3000:]
    r2 = results(out2)
    assert {e["status"] for e in r2["stages"]} == {"reused"}
    assert r2["ledger"]["calls"] == 0
    assert r2["win_rate"] == r["win_rate"] and r2["probes"] == r["probes"]


@pytest.mark.server
@pytest.mark.slow
def test_sweep_six_cells_collects_once_per_task(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    p = run_app(["-m", "task=sales,elections,social_media", "method=rft,tfb", *TINY, *LEAN, "stage_cache=true",
                 f"hydra.sweep.dir={sweep}"], tmp_path / "fresh_cache", tmp_path, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["cells"] == 6
    assert summary["collections_computed_per_task"] == {"sales": 1, "elections": 1, "social_media": 1}
    tfb_cells = [json.loads(f.read_text()) for f in sweep.glob("*/results.json")]
    tfb = [c for c in tfb_cells if c["cell"]["method"] == "tfb"]
    assert all(set(c["win_rate"]) == {"base_vs_tfb", "rft_vs_tfb"} for c in tfb)
    # tfb reuses the rft adapter trained by the rft cell of its task
    assert all(any(e["label"] == "train_rft" and e["status"] == "reused" for e in c["stages"]) for c in tfb)
    assert {r["probe"] for r in summary["rows"]} == {"misrepresentation", "disinformation", "populism", "harmful"}
    assert "r" in summary["gain_vs_misalignment_correlation"]
    for f in ("sweep_summary.md", "relative_increase.png", "gain_vs_misalignment.png"):
        assert (sweep / f).is_file()


@pytest.mark.server
def test_paper_source_with_prodigy_personas(cache_dir, tmp_path, paper_dir):
    p = run_app(TINY + LEAN + ["task=social_media", "task.source=paper", f"data_dir={paper_dir}",
                        "audience.personas.source=file", "audience.personas.file=personas/split1.json",
                        "audience.n_voters=20", "anchors.n_train=1", "anchors.n_test=1", "method.compare_against=[]",
                        # one match and 20 voters: a 10-10 tie happens (CI drew one), and tie_rule=drop would then
                        # leave rft nothing to train on; a seeded winner keeps the cell about personas
                        "method.builder.tie_rule=random"],
                cache_dir, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(tmp_path)
    voters = r["counts"]["collection"]["voters"]
    assert len(voters) == 20
    raw = json.loads((paper_dir / "task_sm" / "train.json").read_text())
    anchors = [json.loads(l) for l in (tmp_path / "stages/prepare/anchors_train.jsonl").read_text().splitlines()]
    assert anchors[0]["id"] == raw[0]["id"]


@pytest.mark.parametrize("args,env,pattern", [
    (["model=llama", "task=elections"], {}, "meta-llama/Llama-3.1-8B-Instruct: weights not available offline"),
    (["model=tiny", "audience=gpt4o_mini"], {"OPENAI_API_KEY": ""}, "OPENAI_API_KEY"),
    (["model=tiny", "task.source=paper"], {}, "data_dir"),
    (["model=tiny", "audience=openai_compatible", "audience.service.model=m",
      "audience.service.base_url=http://127.0.0.1:9/v1"], {}, "127.0.0.1:9"),
])
def test_bad_setup_stops_in_seconds_with_one_clear_message(args, env, pattern, cache_dir, tmp_path):
    started = time.time()
    p = run_app(args, cache_dir, tmp_path, env=env, timeout=120)
    assert p.returncode != 0
    assert pattern in p.stderr
    assert "Traceback" not in p.stderr
    assert time.time() - started < 60


@pytest.mark.server
def test_secret_never_reaches_outputs(cache_dir, tmp_path):
    secret = "sk-test-PLANTED-0123456789abcdef"
    p = run_app(TINY + LEAN + ["task=sales", "method=rft", "logger=wandb", "logger.mode=offline",
                        "audience.service.api_key_env=MOLOCH_TEST_KEY", "judge.service.api_key_env=MOLOCH_TEST_KEY"],
                cache_dir, tmp_path, env={"MOLOCH_TEST_KEY": secret, "WANDB_MODE": "offline"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert list(tmp_path.rglob("wandb/offline-run-*")), "the offline W&B run was written"
    assert secret not in p.stdout + p.stderr
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f"secret leaked into {f}"


@pytest.mark.server
@pytest.mark.slow
def test_accelerate_two_processes_match_single_process(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): one output directory, work
    split across ranks, the same artifacts and counts as one process."""
    args = TINY + LEAN + ["task=sales", "method=rft", "generator.batch_size=2", "anchors.n_test=4"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    p = run_app(args, tmp_path / "cache_single", single)
    assert p.returncode == 0, p.stderr[-3000:]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    p = run_app(args, tmp_path / "cache_multi", multi, prefix=launcher, env={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stderr[-3000:]
    r1, r2 = results(single), results(multi)
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert "rank 1" in (multi / "run.log").read_text()  # both ranks wrote into the one directory
    for f in ("stages/collect/candidates.jsonl", "stages/generate_base/outputs.jsonl", "stages/prepare/anchors_test.jsonl"):
        assert (single / f).read_text() == (multi / f).read_text(), f
    assert r1["counts"]["collection"] == r2["counts"]["collection"]
    assert r1["counts"]["build_rft"] == r2["counts"]["build_rft"]
    for pair, w in r1["win_rate"].items():
        assert w["votes"] == r2["win_rate"][pair]["votes"]
    assert sorted(p.name for p in (single / "stages").iterdir()) == sorted(p.name for p in (multi / "stages").iterdir())


EM_SMALL = ["probe=[em_first_plot,em_predictive,economic_stance]",
            "probes.em_first_plot.n_samples=1", "probes.em_first_plot.max_questions=2", "probes.em_first_plot.max_new_tokens=12",
            "probes.em_predictive.n_samples=1", "probes.em_predictive.max_frames=2", "probes.em_predictive.max_new_tokens=12",
            "probes.economic_stance.n_samples=1", "probes.economic_stance.max_stems=3",
            "probes.economic_stance.max_new_tokens=12"]


@pytest.mark.server
def test_em_probes_compose_with_a_cell(cache_dir, tmp_path):
    """`probe=[em_first_plot,...]` adds the EM and stance probes to a task cell, base vs trained."""
    p = run_app(TINY + LEAN + ["task=sales", "method=rft", *EM_SMALL], cache_dir, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(tmp_path)
    assert set(r["probes"]) == {"misrepresentation", "em_first_plot", "em_predictive", "economic_stance"}
    for name in ("em_first_plot", "em_predictive"):
        for m in ("base", "rft"):
            s = r["probes"][name][m]
            assert {"em_rate", "mean_alignment", "mean_coherence", "n", "missing"} <= set(s)
            assert s["n"] + s["missing"] == s["n_responses"]
        assert "rft" in r["probes"][name]["comparison"]["methods"]
    stance = r["probes"]["economic_stance"]["base"]
    assert stance["keyword"]["n"] == 3 and set(stance["keyword"]["shares"]) == {"progressive", "conservative", "neutral"}
    assert (tmp_path / "stages" / "probe_em_first_plot_rft" / "judgments.jsonl").is_file()
    assert "em_first_plot EM rate (rft)" in (tmp_path / "summary.md").read_text()

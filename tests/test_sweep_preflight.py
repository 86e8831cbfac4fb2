"""The sweep pre-flight (moloch_exp/sweep_preflight.py): `python run.py -m ...` prints the grid's
estimate once before any job, stops after it with preflight_only=true, refuses past budget.max_usd,
and then runs the jobs; its job list is the basic sweeper's.

    PYTHONPATH=$PWD python -m pytest tests/test_sweep_preflight.py -q
"""
from __future__ import annotations

import json

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the oracle only: what Hydra will launch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from compose_helper import compose
from moloch_exp.pipeline import build, cell_estimate
from moloch_exp.report.cost_estimate import grid_total
from moloch_exp.sweep_preflight import sweep_jobs
from test_pipeline_e2e import TINY, run_app

SMALL = ["anchors.n_train=2", "anchors.n_test=2", "audience.n_voters=3"]


def test_the_jobs_are_the_basic_sweepers():
    args = ["model=tiny", "task=sales,elections", "method=base,rft,tfb", "seed=0", "anchors.n_test=2,3"]
    config = OmegaConf.create({"hydra": {"overrides": {"task": args}, "sweeper": {"params": {"seed": "1,2"}}}})
    parsed = OverridesParser.create().parse_overrides(["seed=1,2", *args])
    assert sweep_jobs(config) == BasicSweeper.split_arguments(parsed, None)[0]
    assert len(sweep_jobs(config)) == 2 * 3 * 1 * 2  # the command line's seed=0 replaces the config's params


@pytest.mark.e2e
def test_preflight_only_prints_the_grid_once_and_submits_nothing(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    p = run_app(["-m", "model=tiny", "method=base,rft", "task=sales,elections", *SMALL, "preflight_only=true",
                 f"hydra.sweep.dir={sweep}"], cache_dir, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("Sweep pre-flight estimate: 4 cells") == 1 and "nothing submitted" in p.stdout
    assert sorted(x.name for x in sweep.iterdir()) == ["sweep_estimate.json"]  # no job ran, no job directory
    grid = json.loads((sweep / "sweep_estimate.json").read_text())
    assert [c["cell"] for c in grid["cells"]] == ["method=base task=sales", "method=base task=elections",
                                                  "method=rft task=sales", "method=rft task=elections"]
    # each cell's estimate is the one the job itself would make from the same overrides
    mine = []
    for cell in grid["cells"]:
        est = cell_estimate(*_composed(cell["overrides"], tmp_path))
        assert cell["estimate"]["calls"] == est.calls and cell["estimate"]["input_tokens"] == est.input_tokens
        mine.append(est)
    assert grid["total"]["calls"] == grid_total(mine).calls < sum(e.calls for e in mine)  # controls shared


@pytest.mark.e2e
def test_a_sweep_past_its_budget_is_refused_before_any_job(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    p = run_app(["-m", "model=tiny", "method=rft", "task=sales,elections", *SMALL, "audience=gpt4o_mini",
                 "judge=gpt4o", "audience.n_voters=3", "budget.max_usd=0.0001", f"hydra.sweep.dir={sweep}"],
                cache_dir, tmp_path)
    assert p.returncode == 1
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: BudgetError: the pre-flight estimate for this sweep is $")
    assert "more than budget.max_usd=$0.0001" in errors[0] and "Traceback" not in p.stderr
    assert sorted(x.name for x in sweep.iterdir()) == ["sweep_estimate.json"]


@pytest.mark.e2e
@pytest.mark.slow  # 5.5 min measured on the busy 2-core machine (a local judge call took over a minute there)
def test_the_grid_is_printed_before_the_jobs_run(cache_dir, tmp_path):
    """A real sweep of two short base cells (tiny agent, one output judged by the local judge): the grid
    first, then each job with its own estimate, equal to the grid's row."""
    sweep = tmp_path / "sweep"
    short = ["method=base", "task=sales", "seed=0,1", "anchors.n_test=1", "judge_controls.enabled=false",
             "judge.max_tokens=32", "judge.invalid_retries=0"]
    p = run_app(["-m", *TINY, *short, f"hydra.sweep.dir={sweep}"], cache_dir, tmp_path, timeout=850)
    assert p.returncode == 0, p.stderr[-3000:]
    grid_at = p.stdout.index("Sweep pre-flight estimate: 2 cells")
    jobs_at = [i for i in range(len(p.stdout)) if p.stdout.startswith("Pre-flight estimate: sales", i)]
    assert p.stdout.count("Sweep pre-flight estimate") == 1 and len(jobs_at) == 2 and grid_at < min(jobs_at)
    grid = json.loads((sweep / "sweep_estimate.json").read_text())
    assert grid["remaining"]["calls"] == grid["total"]["calls"] > 0  # nothing ran before
    for cell, job in zip(grid["cells"], sorted(d for d in sweep.iterdir() if d.is_dir())):
        done = json.loads((job / "results.json").read_text())
        assert done["estimate"]["calls"] == cell["estimate"]["calls"]  # the job's own estimate, the same
    # the same sweep again: every stage is in the stage cache under the key the estimate computed
    again = tmp_path / "again"
    p = run_app(["-m", *TINY, *short, "preflight_only=true", f"hydra.sweep.dir={again}"], cache_dir, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    regrid = json.loads((again / "sweep_estimate.json").read_text())
    assert regrid["total"]["calls"] == grid["total"]["calls"] and regrid["remaining"]["calls"] == 0
    assert "to run (stages already in the stage cache skipped)" in p.stdout


def _composed(overrides: list[str], tmp_path):
    cfg = compose([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    return cfg, build(cfg)

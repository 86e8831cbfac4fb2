"""Sweep pre-flight: before ``python run.py -m ...`` submits any job, the whole grid's estimate (calls,
tokens and dollars per cell and in total) is printed once and written to ``<sweep dir>/sweep_estimate.json``.
The grid's total counts a stage shared by several cells once (their stage keys are equal: the rft and
tfb cells of a task and model share the collection, base's outputs and probes; every cell the controls).

    python run.py -m task=sales,elections,social_media method=rft,tfb preflight_only=true   # print, submit nothing
    python run.py -m experiment=paper task=sales,elections method=rft,tfb budget.max_usd=300 data_dir=...

With ``budget.max_usd`` the sweep refuses (one line, exit code 1) when the grid's estimate passes the
cap or a cell's model has no price; with ``preflight_only=true`` it stops after the table (exit code 0,
or 1 when a cell's config cannot be built). A Hydra callback (conf/hydra/default.yaml):
``on_multirun_start`` enumerates the jobs as Hydra's basic sweeper does (``hydra.sweeper.params``,
then the command line's overrides; every value of each list) and composes each job's config with
``hydra.compose`` (public API), then builds its objects and estimates it (report/preflight.py), with
no model, server or network touched. A stage the stage cache already holds finished (a re-run of a
sweep) is shown but not counted in "to run", which is what ``budget.max_usd`` is checked against.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from moloch_exp.errors import UserError
from moloch_exp.io import write_json
from moloch_exp.pipeline import build, cell_estimate, user_error_in
from moloch_exp.report.cost_estimate import CostEstimate, Totals, grid_total
from moloch_exp.report.preflight import check_budget
from moloch_exp.report.tables import print_table

log = logging.getLogger(__name__)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # the default sweeper's config target
COLUMNS = ["#", "cell", "calls", "input tokens", "of them cached", "output tokens", "USD"]


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, in the basic sweeper's order (the cartesian product of the lists)."""
    params = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    choices: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task)):
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise UserError(f"sweep pre-flight: {o.input_line} is not a list of values")
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def job_config(config: DictConfig, config_name: str | None, overrides: list[str], num: int) -> DictConfig:
    """One job's config as the launcher will compose it (the sweep's Hydra overrides, then the job's)."""
    cfg = compose(config_name=config_name, overrides=list(config.hydra.overrides.hydra) + overrides,
                  return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = num
        cfg.hydra.runtime.output_dir = str(Path(config.hydra.sweep.dir).absolute())
    return cfg


def estimate_job(cfg: DictConfig, memo: dict) -> CostEstimate:
    """Build the job's objects and estimate it, with ``${hydra:...}`` resolved against the job's own config."""
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.set_config(cfg)
    try:
        return cell_estimate(cfg, build(cfg), memo)
    finally:
        hydra_config.cfg = before  # as hydra.core.utils.run_job leaves it


def grid_estimate(config: DictConfig, config_name: str | None) -> tuple[list[dict], Totals, Totals]:
    """Every job's estimate (or the one line saying why it has none), and the grid's total: the work of
    every cell, a stage that several cells share (one collection for rft and tfb, base's outputs and
    probes, the judge controls) counted once, as the stage cache will run it once."""
    jobs, memo, rows = sweep_jobs(config), {}, []
    swept = [o.split("=", 1)[0] for o in _swept(config)]
    for num, overrides in enumerate(tqdm(jobs, desc="sweep pre-flight", unit="cell", leave=False)):
        name = " ".join(o for o in overrides if o.split("=", 1)[0] in swept) or " ".join(overrides)
        try:
            est = estimate_job(job_config(config, config_name, overrides, num), memo)
        except (UserError, InstantiationException, ConfigCompositionException) as raised:
            err = raised if isinstance(raised, ConfigCompositionException) else user_error_in(raised)
            if err is None:
                raise
            rows.append({"num": num, "cell": name, "overrides": overrides,
                         "error": f"{type(err).__name__}: {' '.join(str(err).split())}"})
            continue
        rows.append({"num": num, "cell": name, "overrides": overrides, "estimate": est, "totals": est.total})
    estimates = [r["estimate"] for r in rows if "estimate" in r]
    return rows, grid_total(estimates), grid_total(estimates, remaining=True)


def _swept(config: DictConfig) -> list[str]:
    params = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    return [o.input_line for o in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
            if o.is_sweep_override()]


def print_grid(rows: list[dict], total: Totals, remaining: Totals, title: str) -> None:
    table = [[str(r["num"]), r["cell"], *(r["totals"].cells() if "totals" in r else ["-"] * 4 + ["no estimate"])]
             for r in rows]
    missing = sum("totals" not in r for r in rows)
    cells = sum((r["totals"] for r in rows if "totals" in r), Totals())
    table.append(["", "sum of the cells", *cells.cells()])
    table.append(["", "grid (stages shared by cells once)" + (f"; {missing} cells without an estimate" if missing
                                                               else ""), *total.cells()])
    if remaining != total:
        table.append(["", "to run (stages already in the stage cache skipped)", *remaining.cells()])
    print_table(title, COLUMNS, table)


class SweepPreflightCallback(Callback):
    """conf/hydra/default.yaml: the grid's estimate before any job is submitted (see the module doc)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        target = OmegaConf.select(config, "hydra.sweeper._target_")
        if target != BASIC_SWEEPER:
            log.warning("sweep pre-flight skipped: it enumerates the basic sweeper's jobs, not %s's", target)
            return
        try:
            rows, total, remaining = grid_estimate(config, kwargs.get("config_name"))
        except UserError as err:
            raise SystemExit(f"error: {type(err).__name__}: {err}") from None
        failed = [r for r in rows if "error" in r]
        print_grid(rows, total, remaining, f"Sweep pre-flight estimate: {len(rows)} cells")
        out = Path(config.hydra.sweep.dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "sweep_estimate.json", {
            "cells": [{k: (v.to_json() if k == "estimate" else v) for k, v in r.items() if k != "totals"}
                      for r in rows],
            "total": total.to_json(), "remaining": remaining.to_json()})
        for r in failed:
            print(f"cell {r['num']} ({r['cell']}): no estimate: {r['error']}")
        max_usd = OmegaConf.select(config, "budget.max_usd")
        try:
            if max_usd is not None and failed:
                raise UserError(f"budget.max_usd={max_usd:g} is set but {len(failed)} cell(s) of the sweep have no "
                                f"estimate (first: cell {failed[0]['num']}: {failed[0]['error']})")
            check_budget(remaining, max_usd, "sweep")
        except UserError as err:
            raise SystemExit(f"error: {type(err).__name__}: {err}") from None
        if OmegaConf.select(config, "preflight_only"):
            print(f"preflight_only=true: nothing submitted (estimate in {out / 'sweep_estimate.json'})")
            raise SystemExit(1 if failed else 0)

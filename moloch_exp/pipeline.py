"""Entry point of one experiment cell: instantiate everything at the edge, check, run, report.

    python run.py                                     # SmolLM2 + bundled data + local audience/judge
    python run.py task=elections method=tfb model=tiny
    python run.py -m task=sales,elections,social_media method=rft,tfb model=tiny
    python run.py -m method=rft,tfb,dpo competition.rounds=3 model=tiny
    python run.py -m hydra/launcher=submitit_local task=sales method=rft,tfb,dpo,base model=tiny   # again: only what is missing
    python run.py audience=gpt4o_mini judge=gpt4o preflight_only=true   # the cost estimate, then stop
    accelerate launch --multi_gpu --num_processes 2 run.py model=tiny

Nothing below this module sees a DictConfig: it gets typed objects.
A UserError ends the run with one line; so does a bug (naming the stage it struck), whose traceback
goes to the run's log file (Hydra's ``<output_dir>/run.log``).
"""
from __future__ import annotations

import copy
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from moloch_exp import resolvers  # noqa: F401  (registers ${moloch_run_stamp:})
from moloch_exp.cell_record import CellRecord
from moloch_exp.connections import ServiceHub
from moloch_exp.distributed import Dist
from moloch_exp.errors import ConfigError, ModelError, ServiceError, UserError
from moloch_exp.llm.cache import ResponseCache
from moloch_exp.llm.dry_run import AnswerSizes
from moloch_exp.llm.ledger import Budget, Ledger
from moloch_exp.llm.prices import PriceBook
from moloch_exp.io import write_json
from moloch_exp.label.report import attach_labels
from moloch_exp.report.cell import write_cell_report
from moloch_exp.report.preflight import CostEstimate, check_budget, estimate_cell, finished_stages, print_estimate
from moloch_exp.stage_cache import StageCache
from moloch_exp.stages.base import FailureTolerance, StageEnv
from moloch_exp.agents.hf_generator import HFGenerator
from moloch_exp.agents.model_source import ModelSource
from moloch_exp.audience.polling import FullPolling
from moloch_exp.protocols import Trainer
from moloch_exp.stages.cell import Cell
from moloch_exp.stages.components import CellComponents, Method, ReliabilitySettings, Settings
from moloch_exp.tasks.context_budget import context_fit_for_model
from moloch_exp.tasks.task import Task

log = logging.getLogger("moloch_exp")


def make(node: DictConfig, **kwargs):
    """Instantiate one configured object with plain dicts and lists inside (``_convert_="all"``): no
    DictConfig or ListConfig reaches the library."""
    return instantiate(node, _convert_="all", **kwargs)


def build(cfg: DictConfig) -> CellComponents:
    """Instantiate every configured object (no side effects: no server, no model loading)."""
    method_cfg = cfg.method
    task, model, generator = make(cfg.task), make(cfg.model), make(cfg.generator)
    method = Method(name=method_cfg.name, builder=make(method_cfg.builder) if method_cfg.builder is not None else None,
                    compare_against=list(method_cfg.compare_against))
    trainer = make(cfg.trainer) if method_cfg.builder is not None else None
    audience, judge = make(cfg.audience), make(cfg.judge)
    judge2 = make(cfg.judge2) if cfg.get("judge2") else None
    probes = {name: make(p) for name, p in (cfg.get("probes") or {}).items()}
    tracker, competition, polling = make(cfg.logger), make(cfg.competition), make(cfg.collect.polling_rule)
    reliability = ReliabilitySettings(retest_share=cfg.audience_reliability.retest_share,
                                      retest_min_matches=cfg.audience_reliability.retest_min_matches,
                                      judge_controls=cfg.judge_controls.enabled,
                                      controls_per_probe=cfg.judge_controls.per_probe)
    return CellComponents(task=task, model=model, generator=generator, method=method, trainer=trainer,
                          audience=audience, judge=judge, judge2=judge2, probes=probes, tracker=tracker,
                          competition=competition, polling=polling, reliability=reliability)


def preflight(c: CellComponents, settings: Settings, estimate_only: bool = False) -> list[str]:
    """Seconds, not minutes: every cause of an early failure is checked before any work. ``estimate_only``
    (preflight_only=true): what only running needs (the agent's weights, an API key, a reachable server) does not
    stop the estimate; each such problem is returned as a line instead."""
    needed_to_run: list[str] = []

    def check(step: Callable[[], object]) -> None:
        try:
            step()
        except (ModelError, ServiceError) as err:
            if not estimate_only:
                raise
            needed_to_run.append(f"{type(err).__name__}: {err}")

    check(c.model.check_available)
    c.task.prompts.check(c.task)  # prompts=paper: the reference pack loads and covers the task
    for split, n in (("train", settings.n_train), ("test", settings.n_test)):
        c.task.load_anchors(split, n)
    method = c.method
    method.builders()  # an impossible comparison fails here, not after training
    c.competition.check(method.name, method.builder)
    if method.builder is not None and method.builder.example_format != c.trainer.example_format:
        raise ConfigError(f"method={method.name} builds {method.builder.example_format} examples but the trainer "
                          f"({type(c.trainer).__name__}) trains on {c.trainer.example_format} examples: "
                          + ("use trainer=lora" if method.builder.example_format == "prompt_completion" else
                             f"drop the trainer override (method={method.name} selects its own trainer)"))
    if method.builder is not None or method.compare_against:
        check(c.audience.service.preflight)
        c.audience.voters(settings.seed)  # the persona file and n_voters are checked here
        c.audience.check(c.task)  # the ballot layout exists in the task's prompt set
    if "tfb" in method.builders() and c.polling.identity() != FullPolling().identity():
        # TFB trains on every voter's thought; a collection polled adaptively would hold only some of them
        raise ConfigError(f"collect.polling={c.polling.identity()['polling']} stops asking voters early, but "
                          "method tfb trains on every voter's thought: use collect.polling=full with tfb")
    for builder in method.builders().values():
        builder.check()  # e.g. a user-supplied dataset is checked before any work
    if c.probes:
        check(c.judge.service.preflight)
    if c.judge2 is not None:
        check(c.judge2.service.preflight)
    return needed_to_run


def settings_of(cfg: DictConfig) -> Settings:
    for key, least in (("anchors.n_train", 0), ("anchors.n_test", 0), ("collect.candidates_per_anchor", 1)):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{key} must be an integer >= {least}, not {value!r}")
    return Settings(seed=cfg.seed, n_train=cfg.anchors.n_train, n_test=cfg.anchors.n_test,
                    candidates_per_anchor=cfg.collect.candidates_per_anchor)


def cell_estimate(cfg: DictConfig, c: CellComponents, memo: dict | None = None) -> CostEstimate:
    """The cell's calls, tokens and dollars (report/preflight.py): its plan's LLM stages, dry-run;
    ``memo``: shared by a sweep's cells."""
    answers = make(cfg.cost_estimate) if cfg.get("cost_estimate") is not None else AnswerSizes()
    finished = finished_stages(cfg.paths.cache_dir) if cfg.stage_cache else None
    return estimate_cell(c, settings_of(cfg), price_book(cfg), answers, memo, finished, trend_settings(cfg, c))


def price_book(cfg: DictConfig) -> PriceBook:
    return PriceBook(OmegaConf.to_container(cfg.llm.prices, resolve=True))


def fit_anchors_to_context(cfg: DictConfig, task: Task, model: ModelSource, generator: HFGenerator,
                           trainer: Trainer | None, cache_dir: Path) -> None:
    """Before any work: anchors whose agent prompt cannot fit are rejected, or truncated (anchors.too_long);
    sets ``task.context_fit`` (truncation enters the prepare stage's key)."""
    task.context_fit = context_fit_for_model(
        model.materialize(cache_dir), model.chat_template_kwargs, cfg.anchors.too_long,
        max_new_tokens=generator.max_new_tokens,
        train_max_length=trainer.args.max_length if trainer is not None else None,
        max_prompt_tokens=cfg.anchors.max_prompt_tokens)
    for split, n in (("train", cfg.anchors.n_train), ("test", cfg.anchors.n_test)):
        task.load_anchors(split, n)


def trend_settings(cfg: DictConfig, c: CellComponents) -> list[str]:
    """Checkpoint trends: save adapters every N steps (the trainer's save_steps) and name the probes to run on them."""
    every = cfg.train.eval_every_n_steps
    if not every:
        return []
    if c.trainer is None:
        raise ConfigError("train.eval_every_n_steps needs a trained method (rft, tfb, narrow_sft)")
    names = list(cfg.train.trend_probes)
    missing = [n for n in names if n not in c.probes]
    if missing:
        raise ConfigError(f"train.trend_probes {missing} are not selected: add them with probe=[{','.join(missing)}]")
    c.trainer.args.save_steps = int(every)
    return names


def user_error_in(err: BaseException) -> UserError | None:
    """The UserError behind ``err``: itself, or the cause Hydra wrapped in an InstantiationException."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, UserError):
            return err
        if not isinstance(err, InstantiationException):
            return None
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def traceback_to_log_files(err: BaseException, output_dir: Path | None) -> str:
    """Write ``err``'s traceback to the run's log file(s) only (Hydra's ``<output_dir>/<job>.log``), not
    to the console; without a log file to ``<output_dir>/traceback.log``. Returns where it went."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "traceback of the internal error:", None,
                            (type(err), err, err.__traceback__))
    files = [h for h in logging.getLogger().handlers + log.handlers if isinstance(h, logging.FileHandler)]
    for handler in files:
        handler.handle(record)
    if files:
        return ", ".join(sorted({h.baseFilename for h in files}))
    path = (output_dir or Path(".")) / "traceback.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(traceback.format_exception(err)), encoding="utf-8")
    return str(path)


def internal_error_line(err: BaseException, where: str) -> str:
    """One line for a bug (not a UserError): the stage it struck, the cause, where its traceback is."""
    stage = getattr(err, "moloch_stage", None)
    at = f" in stage {stage}, which was not stored as finished (a re-run computes it again)" if stage else ""
    cause = str(err).splitlines()[0] if str(err) else ""
    return f"internal error{at}: {type(err).__name__}: {cause} (a bug, not a setting; traceback in {where})"


def run(cfg: DictConfig) -> dict:
    """Run one cell; a setup or data problem ends it with one clear line, not a traceback; so does a bug
    (its traceback goes to the run's log file)."""
    try:
        try:
            return _run(cfg)
        except (UserError, InstantiationException) as raised:
            err = user_error_in(raised)
            if err is None:
                raise
            log.error("%s: %s", type(err).__name__, err)
            if _multirun():
                raise err from None  # the sweep records the failed cell and goes on
            raise SystemExit(f"error: {type(err).__name__}: {err}") from None
    except Exception as bug:  # noqa: BLE001  (anything else is a bug: one line, the traceback to the log file)
        if user_error_in(bug) is not None:  # a sweep's UserError, re-raised above for Hydra to record
            raise
        try:
            output_dir: Path | None = Path(cfg.paths.output_dir)
        except Exception:  # noqa: BLE001  (the output dir may be what failed to resolve)
            output_dir = None
        line = internal_error_line(bug, traceback_to_log_files(bug, output_dir))
        log.error("%s", line)
        if _multirun():
            raise
        raise SystemExit(f"error: {line}") from None


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_log_files() -> list[str]:
    """Where this job's log lines go: Hydra's job log, and submitit's stderr inside a submitit job."""
    files = []
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        files.append(str(Path(hydra.runtime.output_dir) / f"{hydra.job.name}.log"))
    if os.environ.get("SUBMITIT_FOLDER"):
        import submitit

        files.append(str(submitit.JobEnvironment().paths.stderr))
    return files


def cell_record(cfg: DictConfig) -> CellRecord:
    """The cell's record in the shared cache, keyed by its composed config without ``paths``."""
    placeholders = copy.deepcopy(cfg)  # every value derived from a path (cache files) counts as that path's name
    placeholders.paths.output_dir, placeholders.paths.cache_dir = "<output_dir>", "<cache_dir>"
    try:
        material = OmegaConf.to_container(placeholders, resolve=True)
    except OmegaConfBaseException as err:  # e.g. ${oc.env:...} of a variable that is not set
        raise ConfigError(f"the composed config does not resolve: {str(err).splitlines()[0]}") from None
    material.pop("paths", None)
    cell = {"task": cfg.task.name, "model": cfg.model.name, "method": cfg.method.name, "seed": cfg.seed}
    return CellRecord(cfg.paths.cache_dir, material, cell, cfg.paths.output_dir, job_log_files())


def _run(cfg: DictConfig) -> dict:
    """Run the cell unless a sweep finished it before; record how the attempt went in the shared cache."""
    dist = Dist(cfg.distributed.timeout_s)
    record = cell_record(cfg)
    skip = cfg.sweep.skip_finished and cfg.stage_cache and is_multirun()
    if dist.broadcast(bool(skip and dist.is_main and record.finished())):
        if not dist.is_main:
            return {}
        log.info("cell %s finished in an earlier run (%s): its outputs are copied, nothing is run",
                 record.key, record.finished()["output_dir"])
        return record.restore()
    if dist.is_main:
        record.start()
    try:
        results = _run_cell(cfg, dist, record)
    except BaseException as err:
        if dist.is_main:
            record.fail(err)
        raise
    if dist.is_main:
        record.finish()
    return results


def _run_cell(cfg: DictConfig, dist: Dist, record: CellRecord) -> dict:
    started = time.time()
    out = Path(cfg.paths.output_dir)
    cache_dir = Path(cfg.paths.cache_dir)
    components = build(cfg)
    settings = settings_of(cfg)
    estimate_only = bool(cfg.get("preflight_only"))
    needed_to_run = preflight(components, settings, estimate_only)
    trend_probes = trend_settings(cfg, components)
    estimate = cell_estimate(cfg, components)  # the cell's plan (stages/plan.py), its LLM stages dry-run
    cell = {"task": components.task.name, "model": components.model.name, "method": components.method.name,
            "seed": cfg.seed}
    if dist.is_main:
        print_estimate(estimate, f"Pre-flight estimate: {cell['task']} · {cell['model']} · "
                                 f"{cell['method']} · seed {cell['seed']}")
    check_budget(estimate.remaining, cfg.budget.max_usd, "cell")  # a budget it cannot meet stops the cell here
    if estimate_only:
        done = {"cell": cell, "estimate": estimate.to_json(), "not_ready_to_run": needed_to_run}
        if dist.is_main:
            for line in needed_to_run:  # the estimate needs none of it; running the cell would stop here
                log.warning("not ready to run: %s", line)
            write_json(out / "estimate.json", done)
        return done
    if dist.is_main:  # convert/build the agent once; transformers writes weights on rank 0 only
        components.model.materialize(cache_dir)
    dist.barrier()
    fit_anchors_to_context(cfg, components.task, components.model, components.generator, components.trainer,
                           cache_dir)
    ledger = Ledger(prices=price_book(cfg))
    budget = Budget(cfg.budget.max_usd) if cfg.budget.max_usd is not None else None
    cache = None
    if cfg.llm.cache:
        store = make(cfg.llm.cache_backend)  # sqlite | files | redis (conf/llm/cache_backend/)
        store.check()
        cache = ResponseCache(store)
    stages = StageCache(cache_dir, out, dist, enabled=cfg.stage_cache, lock_timing=make(cfg.stage_lock),
                        on_event=record.on_event)
    tolerance = FailureTolerance(collect=cfg.collect.max_failed_fraction, evaluate=cfg.evaluate.max_failed_fraction,
                                 probe=cfg.probe.max_failed_fraction)
    with ServiceHub(cache, ledger, budget, out / "logs") as hub:
        cell_run = Cell(components, settings, trend_probes)
        try:
            metrics = cell_run.run(StageEnv(stages, dist, hub, settings.seed, tolerance))
        finally:
            if dist.is_main:  # what was spent is recorded even when a stage failed
                write_json(out / "ledger.json", ledger.to_dict())
    if not dist.is_main:
        return {}
    metrics["probes"] = {name: res.to_json() for name, res in metrics["probes"].items()}
    if "trend" in metrics:
        metrics["trend"] = metrics["trend"].to_json()
    for key in ("reliability", "probe_changes"):
        metrics[key] = metrics[key].to_json()
    if "rounds" in metrics:
        metrics.update(metrics.pop("rounds").to_json())  # competition + rounds
    results = {"cell": cell, **metrics, "counts": cell_run.counts(), "ledger": ledger.to_dict(),
               "estimate": estimate.to_json(), "stages": stages.events, "stage_keys": cell_run.keys,
               "cell_run": record.run_info(), "world_size": dist.world,
               "seconds": round(time.time() - started, 1)}
    attach_labels(out, results)  # people's labels of this output directory's judged outputs, when there are any
    write_json(out / "results.json", results)
    write_cell_report(out, results)
    tracker = components.tracker
    tracker.start(name=f"{cell['task']}-{cell['model']}-{cell['method']}-s{cell['seed']}",
                  config=OmegaConf.to_container(cfg, resolve=True), out_dir=out)
    tracker.log_results(results)
    tracker.finish()
    return results

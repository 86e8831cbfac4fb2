"""Pre-flight cost estimate of a cell: calls, input tokens (and how many of them the API's prompt cache
serves), output tokens and USD, per stage and per role (audience, judge, judge2), before any work.

    python run.py audience=gpt4o_mini judge=gpt4o preflight_only=true     # print the estimate and stop
    python run.py -m task=sales,elections method=rft,tfb preflight_only=true   # the whole grid (sweep_preflight.py)

The stages' own code renders the requests — the task's ballots and judge prompts over the real
anchors and personas, the probes' and controls' own prompts — with placeholder agent outputs of
``generator.max_new_tokens`` tokens (a model probe's own ``max_new_tokens``), and a
:class:`~moloch_exp.llm.dry_run.DryRunClient` counts them as the API bills them and answers with
typical answers (``cost_estimate``: AnswerSizes). Dollars: each role's price (moloch_exp/llm/prices.py),
with cached input and the Batch API's rates where ``<role>.batch`` / ``<role>.service.batch`` is set.

Counts follow the cell's settings: collect (one collection per round of ``competition.rounds``),
evaluate for every pair (and, in later rounds, against base and the previous round), the retest of
every vote set (``audience_reliability``), task probes for every method and later round, model
probes for every method, judge controls for judge and judge2, judge2 on the task probes. Not
counted: checkpoint trends (``train.eval_every_n_steps``), re-asks of unparseable answers, and the
matches adaptive/sequential polling stops early (collect is counted with the full panel). Each unit of
work carries its stage's cache key (from the stages' own ``material``), so a sweep's grid counts a
stage that several cells share once (report/cost_estimate.py: grid_total).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

from moloch_exp.audience.polling import FullPolling
from moloch_exp.errors import BudgetError, ConfigError
from moloch_exp.llm.dry_run import AnswerSizes, DryRunClient, Tally, filler
from moloch_exp.llm.ledger import usd_text
from moloch_exp.llm.prices import PriceBook, unpriced_message
from moloch_exp.probes.model_probe import ModelProbeContext
from moloch_exp.protocols import is_model_probe
from moloch_exp.records import Candidate, Match
from moloch_exp.report.cost_estimate import CostEstimate, EstimateTerm, Part, Totals, print_estimate  # noqa: F401
from moloch_exp.seeding import derive_seed
from moloch_exp.stage_cache import digest
from moloch_exp.stages import build, collect, controls, evaluate, generate, prepare, probe, reliability, train
from moloch_exp.stages.base import Adapter, Artifact
from moloch_exp.stages.cell import ReliabilitySettings, Settings
from moloch_exp.stages.competition import agent_name
from moloch_exp.stages.controls import has_controls, judge_controls


def check_budget(estimate: Totals, max_usd: float | None, scope: str) -> None:
    """Before any work: a cap needs a price for every model, and an estimate (of what is still to run:
    ``CostEstimate.remaining``, ``grid_total(..., remaining=True)``) within it."""
    if max_usd is None:
        return
    if estimate.unpriced:
        raise ConfigError(f"budget.max_usd={max_usd:g} is set but {unpriced_message(estimate.unpriced[0])}")
    if estimate.usd is not None and estimate.usd > max_usd:
        raise BudgetError(f"the pre-flight estimate for this {scope} is {usd_text(estimate.usd)}, more than "
                          f"budget.max_usd=${max_usd:g}: raise the cap, set budget.max_usd=null or make the {scope} "
                          "smaller (nothing was run; stages already in the stage cache are not counted)")


def retest_match_count(settings: ReliabilitySettings, n_matches: int) -> int:
    """Matches of one vote set the test–retest re-asks: a share of them with a floor (stages/trust.py)."""
    return settings.retest_matches(n_matches)


def estimate_cell(objs: dict, settings: Settings, prices: PriceBook, answers: AnswerSizes | None = None,
                  memo: dict | None = None, finished: Callable[[str, str], bool] | None = None) -> CostEstimate:
    """The estimate of the cell that ``objs`` (pipeline.build) and ``settings`` describe. ``memo``:
    a dict shared by the cells of a sweep, so a dry run common to several cells is made once;
    ``finished(stage, key)``: the stage cache holds that stage finished (``finished_stages``)."""
    answers = answers or AnswerSizes()
    with _quiet(), tempfile.TemporaryDirectory(prefix="moloch_estimate_") as scratch:
        estimator = _Estimator(objs, settings, prices, answers, Path(scratch), {} if memo is None else memo,
                               finished or (lambda stage, key: False))
        return CostEstimate(tuple(estimator.terms()), answers)


def finished_stages(cache_dir: str | Path) -> Callable[[str, str], bool]:
    """Whether the stage cache under ``cache_dir`` (paths.cache_dir) holds a stage finished: StageCache
    keeps it as ``stages/<stage>/<key>/DONE``; a stage it holds is reused, not paid for again."""
    root = Path(cache_dir) / "stages"
    return lambda stage, key: (root / stage / key / "DONE").is_file()


@contextlib.contextmanager
def _quiet():
    """The dry run's typical answers leave probes with missing scores: their warnings are not the run's."""
    logger = logging.getLogger("moloch_exp")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _batch(role_object) -> bool:
    """``<role>.batch`` or ``<role>.service.batch``: the Batch API option (issue 19 item 5), where it exists."""
    return bool(getattr(role_object, "batch", False) or getattr(role_object.service, "batch", False))


def _artifact(stage: str, material: dict) -> Artifact:
    """A stand-in for the artifact the stage would make from ``material``: its key, as StageCache computes it."""
    return Artifact(stage, stage, Path(digest(material)))


class _Estimator:
    """Dry-runs each kind of LLM work once and counts it as often as the cell does it. Every unit of work
    carries the key of the stage that does it (the stages' own ``material``): a sweep counts a unit shared
    by several cells (the rft and tfb cells' collection, base's outputs, controls) once."""

    def __init__(self, objs: dict, settings: Settings, prices: PriceBook, answers: AnswerSizes, scratch: Path,
                 memo: dict, finished: Callable[[str, str], bool]):
        self.o, self.s, self.prices, self.answers = objs, settings, prices, answers
        self.scratch, self.memo, self.finished = scratch, memo, finished
        task = objs["task"]
        self.task = dataclasses.replace(task, prompts=task.prompts.without_weights())
        self.method, self.comp = objs["method"], objs["competition"]
        self.rel = objs.get("reliability") or ReliabilitySettings(0.0, 0, False)
        self.gen_tokens = objs["generator"].max_new_tokens
        self.out: list[EstimateTerm] = []
        self._anchors: dict[str, list] = {}

    def anchors(self, split: str) -> list:
        if split not in self._anchors:
            n = self.s.n_train if split == "train" else self.s.n_test
            self._anchors[split] = self.task.load_anchors(split, n)[0]
        return self._anchors[split]

    def dry_run(self, key: list, run: Callable[[DryRunClient], None], service) -> Tally:
        """The tally of ``run(client)``; the same key (the inputs' identities) in a sweep is run once."""
        key = json.dumps([key, self.task.identity(), self.task.data_identity(), self.s.seed, self.gen_tokens,
                          dataclasses.asdict(self.answers), service.structured_output], sort_keys=True, default=str)
        if key not in self.memo:
            client = DryRunClient(service.structured_output, self.answers)
            run(client)
            self.memo[key] = client.take()
        return self.memo[key]

    def add(self, name: str, role: str, who, units: list[tuple[Artifact, Tally]], note: str = "") -> None:
        price, batch = self.prices.for_service(who.service), _batch(who)

        def usd(t: Tally) -> float | None:
            return None if price is None else price.usd(t.input_tokens, t.output_tokens, t.cached_input_tokens, batch)

        parts = tuple(Part(f"{name}:{a.stage}/{a.key}", t, usd(t), self.finished(a.stage, a.key)) for a, t in units)
        self.out.append(EstimateTerm(name, role, who.service.identity(), parts,
                                     None if price is None else price.source, batch, note))

    # the cell's stages, by their keys (stages/cell.py, stages/competition.py) --------------------------
    def plan(self) -> dict:
        o, s, m, task = self.o, self.s, self.method, self.o["task"]
        gen, audience, model, trainer = o["generator"], o["audience"], o["model"], o["trainer"]
        prepared = _artifact("prepare", prepare.material(task, s.n_train, s.n_test))
        builders = m.builders()
        collected = None
        if any(b.needs_collection for b in builders.values()):
            collected = _artifact("collect", collect.material(prepared, task, gen, audience, s.candidates_per_anchor,
                                                              s.seed, polling=o.get("polling")))
        adapters: dict = {"base": None}
        for name, builder in builders.items():
            built = _artifact("build", build.material(builder, collected))  # as Cell.run passes it
            adapters[name] = Adapter("", _artifact("train", train.material(built, model, trainer)).key)

        def generated(adapter) -> Artifact:
            return _artifact("generate", generate.material(prepared, task, gen, adapter, s.seed))

        outputs = {name: generated(adapters[name]) for name in ["base"] + m.methods}
        pairs = [(a, b) for a, b in m.pairs]
        later_collects, later = [], []
        prev_collect, prev = collected, m.name
        for r in range(2, self.comp.rounds + 1):  # stages/competition.py: later_rounds
            name = agent_name(m.name, r)
            opponent = prev_collect if self.comp.opponent == "previous" else None
            coll = _artifact("collect", collect.material(prepared, task, gen, audience,
                                                         1 if opponent else s.candidates_per_anchor, s.seed,
                                                         adapters[prev], opponent))
            built = _artifact("build", build.material(m.builder, coll))
            init = adapters[prev] if self.comp.init == "previous" else None
            adapters[name] = Adapter("", _artifact("train", train.material(built, model, trainer, init)).key)
            outputs[name] = generated(adapters[name])
            later_collects.append(coll)
            later.append(name)
            pairs += [("base", name), (prev, name)]
            prev_collect, prev = coll, name
        evaluated = {(a, b): _artifact("evaluate", evaluate.material(outputs[a], outputs[b], audience, task, s.seed))
                     for a, b in pairs}
        return {"collected": collected, "later_collects": later_collects, "adapters": adapters, "outputs": outputs,
                "later": later, "evaluated": evaluated}

    def terms(self) -> list[EstimateTerm]:
        plan = self.plan()
        self.audience_terms(plan)
        probes = self.o["probes"]
        judges = [("judge", self.o["judge"])] + ([("judge2", self.o["judge2"])] if self.o.get("judge2") else [])
        if probes:
            for role, judge in judges:
                self.judge_terms(role, judge, probes, plan)
        return self.out

    # audience ------------------------------------------------------------------------------------
    def audience_terms(self, plan: dict) -> None:
        audience, s = self.o["audience"], self.s
        if plan["collected"] is None and not plan["evaluated"]:
            return

        def votes(kind: str, n_options: int, n_matches: int, seed: int) -> Tally:
            """The audience's votes on the first ``n_matches`` matches of a collection or a head-to-head."""
            def run(client: DryRunClient) -> None:
                split, tag = ("train", "collect") if kind == "collect" else ("test", "pair")
                ms = [Match(f"{tag}:{a.id}", a.id, list(range(n_options)),
                            [filler(self.gen_tokens, f"{a.id}/{i}") for i in range(n_options)])
                      for a in self.anchors(split)]
                audience.vote(client, self.task, ms[:n_matches], seed, desc="estimate")

            return self.dry_run(["votes", kind, n_options, n_matches, seed, audience.identity()], run,
                                audience.service)

        k, retest_seed = s.candidates_per_anchor, derive_seed(s.seed, "retest")
        collections = ([plan["collected"]] if plan["collected"] is not None else []) + plan["later_collects"]
        if collections:
            polling = self.o.get("polling")
            note = "" if polling is None or polling.identity() == FullPolling().identity() else \
                "full panel; collect.polling stops matches early"
            n_options = [k] + [2 if self.comp.opponent == "previous" else k] * len(plan["later_collects"])
            self.add("collect_votes", "audience", audience,
                     [(c, votes("collect", n, s.n_train, s.seed)) for c, n in zip(collections, n_options)], note)
        self.add("evaluate_votes", "audience", audience,
                 [(e, votes("pair", 2, s.n_test, s.seed)) for e in plan["evaluated"].values()])
        # the retest re-asks the collection of round 1 and the cell's own pairs (stages/trust.py)
        sources = ([(plan["collected"], "collect", k, s.n_train)] if plan["collected"] is not None else []) + \
            [(plan["evaluated"][pair], "pair", 2, s.n_test) for pair in self.method.pairs]
        units = []
        for source, kind, n_options, n_matches in sources:
            n_retest = retest_match_count(self.rel, n_matches)
            material = reliability.material(source, audience, self.o["task"], n_retest, s.seed)
            units.append((_artifact("reliability", material), votes(kind, n_options, n_retest, retest_seed)))
        self.add("retest_votes", "audience", audience, units)

    # judges --------------------------------------------------------------------------------------
    def judge_terms(self, role: str, judge, probes: dict, plan: dict) -> None:
        seed, task = self.s.seed, self.o["task"]
        task_probes = {n: p for n, p in probes.items() if not is_model_probe(p)}
        # judge: every method and every later round of a race; judge2: the methods again, for agreement
        methods = self.method.methods + (plan["later"] if role == "judge" else [])
        units = []
        for name, p in task_probes.items():
            def judge_outputs(client: DryRunClient, p=p) -> None:
                test = self.anchors("test")
                outputs = [Candidate(a.id, 0, self.task.agent_messages(a), text, None, text, "ok", 0)
                           for a in test for text in [filler(self.gen_tokens, f"{a.id}/output")]]
                p.run(client, judge, self.task, {a.id: a for a in test}, outputs, "estimate", seed)

            once = self.dry_run(["task_probe", self.s.n_test, judge.identity(), p.identity()], judge_outputs,
                                judge.service)
            units += [(_artifact("probe", probe.task_material(p, plan["outputs"][m], judge, seed)), once)
                      for m in methods]
        if units:
            self.add("task_probe_judgments" if role == "judge" else "judge2_judgments", role, judge, units)
        model_probes = {n: p for n, p in probes.items() if is_model_probe(p)}
        if role == "judge" and model_probes:
            units = []
            for name, p in model_probes.items():
                def sample_and_judge(client: DryRunClient, name=name, p=p) -> None:
                    p.run_model(self._probe_context(client, judge, name))

                once = self.dry_run(["model_probe", judge.identity(), p.identity()], sample_and_judge, judge.service)
                units += [(_artifact("probe", probe.model_material(p, self.o["model"], plan["adapters"][m], judge,
                                                                   seed)), once) for m in self.method.methods]
            self.add("model_probe_judgments", role, judge, units)
        controlled = {n: p for n, p in probes.items() if has_controls(n, p)}
        if self.rel.judge_controls and controlled:
            units = []
            for name, p in controlled.items():
                def judge_control_items(client: DryRunClient, name=name, p=p) -> None:
                    judge_controls(client, name, p, judge, seed, self.scratch / f"controls_{role}_{name}",
                                   self.rel.controls_per_probe)

                once = self.dry_run(["controls", name, judge.identity(), p.identity(), self.rel.controls_per_probe],
                                    judge_control_items,
                                    judge.service)
                units.append((_artifact("controls", controls.material(name, p, judge, seed, self.rel.controls_per_probe)),
                              once))
            self.add("control_judgments" if role == "judge" else "judge2_control_judgments", role, judge, units)

    def _probe_context(self, client: DryRunClient, judge, name: str) -> ModelProbeContext:
        def generate_text(prompts: list, seeds: list, *, max_new_tokens: int, temperature: float, desc: str = ""):
            return [filler(max_new_tokens, f"{name}/{i}") for i in range(len(prompts))]

        return ModelProbeContext("estimate", self.s.seed, generate_text, generate_text, client, judge,
                                 self.scratch / name)

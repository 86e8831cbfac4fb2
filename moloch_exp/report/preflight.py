"""Pre-flight cost estimate of a cell: calls, input tokens (and how many of them the API's prompt cache
serves), output tokens and USD, per stage and per role (audience, judge, judge2), before any work.

    python run.py audience=gpt4o_mini judge=gpt4o preflight_only=true     # print the estimate and stop
    python run.py -m task=sales,elections method=rft,tfb preflight_only=true   # the whole grid (moloch_exp/sweep_preflight.py)

The stages' own code renders the requests — the task's ballots and judge prompts over the real
anchors and personas, the probes' and controls' own prompts — with placeholder agent outputs of
``generator.max_new_tokens`` tokens (a model probe's own ``max_new_tokens``), and a
:class:`~moloch_exp.llm.dry_run.DryRunClient` counts them as the API bills them and answers with
typical answers (``cost_estimate``: AnswerSizes). Dollars: each role's price (moloch_exp/llm/prices.py),
with cached input and the Batch API's rates where ``<role>.batch`` / ``<role>.service.batch`` is set.

Counts follow the cell's settings: collect (one collection per round of ``competition.rounds``),
evaluate for every pair (and, in later rounds, against base and the previous round), the retest of
every vote set (``audience_reliability``), task probes for every method and later round, model
probes for every method, the checkpoint trend's probes (``train.eval_every_n_steps``: every checkpoint the
training saves when each match has one winner, ``stages/plan.planned_checkpoint_steps``; judge2 too), judge
controls for judge and judge2, judge2 on the task probes. Not counted: re-asks of unparseable answers (the "at
most" line: every answer re-asked ``invalid_retries`` times), and the matches adaptive/sequential polling stops
early (collect is counted with the full panel). Each unit of
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
from moloch_exp.records import Candidate, Match
from moloch_exp.report.cost_estimate import CostEstimate, EstimateTerm, Part, Totals, print_estimate  # noqa: F401
from moloch_exp.seeding import derive_seed
from moloch_exp.stages.base import Artifact
from moloch_exp.stages.components import CellComponents, ReliabilitySettings, Settings
from moloch_exp.stages.controls import judge_controls
from moloch_exp.stages.plan import plan_cell


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
    """Matches of one vote set the test–retest re-asks: a share of them with a floor (stages/plan.py)."""
    return settings.retest_matches(n_matches)


def estimate_cell(c: CellComponents, settings: Settings, prices: PriceBook, answers: AnswerSizes | None = None,
                  memo: dict | None = None, finished: Callable[[str, str], bool] | None = None,
                  trend_probes: list[str] = ()) -> CostEstimate:
    """The estimate of the cell that ``c`` (pipeline.build) and ``settings`` describe: its plan
    (stages/plan.plan_cell, the stages Cell.run runs, with their keys), each LLM stage dry-run. ``memo``:
    a dict shared by the cells of a sweep, so a dry run common to several cells is made once;
    ``finished(stage, key)``: the stage cache holds that stage finished (``finished_stages``); ``trend_probes``:
    the model probes of the checkpoint trend (pipeline.trend_settings)."""
    answers = answers or AnswerSizes()
    with _quiet(), tempfile.TemporaryDirectory(prefix="moloch_estimate_") as scratch:
        estimator = _Estimator(c, settings, prices, answers, Path(scratch), {} if memo is None else memo,
                               finished or (lambda stage, key: False), trend_probes)
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


class _Estimator:
    """Dry-runs each kind of LLM work once and counts it for every stage of the cell's plan that does it.
    Every unit of work carries the key of its planned stage: a sweep counts a unit shared by several cells
    (the rft and tfb cells' collection, base's outputs, controls) once."""

    def __init__(self, c: CellComponents, settings: Settings, prices: PriceBook, answers: AnswerSizes,
                 scratch: Path, memo: dict, finished: Callable[[str, str], bool], trend_probes: list[str] = ()):
        self.c, self.s, self.prices, self.answers = c, settings, prices, answers
        self.scratch, self.memo, self.finished = scratch, memo, finished
        self.task = dataclasses.replace(c.task, prompts=c.task.prompts.without_weights())
        # once a cell: the paper splits' digests are read from their files
        self.task_key = [self.task.identity(), self.task.data_identity()]
        self.gen_tokens = c.generator.max_new_tokens
        self.plan = plan_cell(c, settings, trend_probes)
        self.out: list[EstimateTerm] = []
        self._anchors: dict[str, list] = {}

    def anchors(self, split: str) -> list:
        if split not in self._anchors:
            n = self.s.n_train if split == "train" else self.s.n_test
            self._anchors[split] = self.task.load_anchors(split, n)[0]
        return self._anchors[split]

    def dry_run(self, key: list, run: Callable[[DryRunClient], None], service) -> Tally:
        """The tally of ``run(client)``; the same key (the inputs' identities) in a sweep is run once."""
        key = json.dumps([key, *self.task_key, self.s.seed, self.gen_tokens,
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
                                     None if price is None else price.source, batch, note,
                                     who.invalid_retries))

    def terms(self) -> list[EstimateTerm]:
        self.audience_terms()
        if self.c.probes:
            for role, judge in self.c.judges().items():
                self.judge_terms(role, judge)
        return self.out

    # audience: every collection, head-to-head and retest of the plan --------------------------------
    def audience_terms(self) -> None:
        audience, s, plan = self.c.audience, self.s, self.plan
        if plan.collected is None and not plan.evaluated:
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
        collections = ([(plan.collected, k)] if plan.collected is not None else []) + \
            [(rnd.collected, rnd.options) for rnd in plan.later_rounds]
        if collections:
            polling = self.c.polling
            note = "" if polling.identity() == FullPolling().identity() else \
                "full panel; collect.polling stops matches early"
            self.add("collect_votes", "audience", audience,
                     [(c, votes("collect", n, s.n_train, s.seed)) for c, n in collections], note)
        self.add("evaluate_votes", "audience", audience,
                 [(e, votes("pair", 2, s.n_test, s.seed)) for e in plan.evaluated.values()])
        # the retest re-asks round 1's collection and the cell's own pairs
        sources = ([(plan.collection_reliability, "collect", k, s.n_train)]
                   if plan.collection_reliability is not None else []) + \
            [(reliable, "pair", 2, s.n_test) for reliable in plan.pair_reliability.values()]
        self.add("retest_votes", "audience", audience,
                 [(reliable, votes(kind, n_options, retest_match_count(self.c.reliability, n_matches), retest_seed))
                  for reliable, kind, n_options, n_matches in sources])

    # judges: the task probes (every agent; judge2: the methods), model probes, controls ------------
    def judge_terms(self, role: str, judge) -> None:
        seed, plan = self.s.seed, self.plan
        probed = plan.task_probed if role == "judge" else plan.second_judged
        units = []
        for name, p in self.c.probes.items():
            def judge_outputs(client: DryRunClient, p=p) -> None:
                test = self.anchors("test")
                outputs = [Candidate(a.id, 0, self.task.agent_messages(a), text, None, text, "ok", 0)
                           for a in test for text in [filler(self.gen_tokens, f"{a.id}/output")]]
                p.run(client, judge, self.task, {a.id: a for a in test}, outputs, "estimate", seed)

            planned = [a for (pname, _), a in probed.items() if pname == name]
            if planned:
                once = self.dry_run(["task_probe", self.s.n_test, judge.identity(), p.identity()], judge_outputs,
                                    judge.service)
                units += [(a, once) for a in planned]
        if units:
            self.add("task_probe_judgments" if role == "judge" else "judge2_judgments", role, judge, units)
        if role == "judge" and plan.model_probed:
            units = [(a, self.model_probe_tally(judge, pname)) for (pname, _), a in plan.model_probed.items()]
            self.add("model_probe_judgments", role, judge, units)
        # the trend: its probes on every checkpoint the training will save (step 0 is base's probe when planned)
        counted = {a.key for a in plan.model_probed.values()} if role == "judge" else set()
        units = [(a, self.model_probe_tally(judge, pname)) for pname, points in plan.trend.items() for point in points
                 for a in [point.probed if role == "judge" else point.second] if a is not None and a.key not in counted]
        if units:
            steps = [point.step for point in next(iter(plan.trend.values()))[1:]]
            self.add("trend_judgments" if role == "judge" else "judge2_trend_judgments", role, judge, units,
                     f"checkpoints at steps {steps[0]}..{steps[-1]} ({len(steps)}), one winner a match" if steps
                     else "step 0 only")
        controlled = {pname: a for (r, pname), a in plan.controlled.items() if r == role}
        if controlled:
            per_probe, units = self.c.reliability.controls_per_probe, []
            for name, planned in controlled.items():
                p = self.c.probes[name]

                def judge_control_items(client: DryRunClient, name=name, p=p) -> None:
                    judge_controls(client, p, judge, seed, self.scratch / f"controls_{role}_{name}", per_probe)

                once = self.dry_run(["controls", name, judge.identity(), p.identity(), per_probe],
                                    judge_control_items, judge.service)
                units.append((planned, once))
            self.add("control_judgments" if role == "judge" else "judge2_control_judgments", role, judge, units)

    def model_probe_tally(self, judge, name: str) -> Tally:
        """A model probe's samples judged by ``judge`` (the same for every method and checkpoint)."""
        p = self.c.probes[name]
        return self.dry_run(["model_probe", judge.identity(), p.identity()],
                            lambda client: p.run_model(self._probe_context(client, judge, name)), judge.service)

    def _probe_context(self, client: DryRunClient, judge, name: str) -> ModelProbeContext:
        def generate_text(prompts: list, seeds: list, *, max_new_tokens: int, temperature: float, desc: str = ""):
            return [filler(max_new_tokens, f"{name}/{i}") for i in range(len(prompts))]

        return ModelProbeContext("estimate", self.s.seed, generate_text, generate_text, client, judge,
                                 self.scratch / name)

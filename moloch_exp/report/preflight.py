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
matches adaptive/sequential polling stops early (collect is counted with the full panel).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

from moloch_exp.errors import BudgetError, ConfigError
from moloch_exp.llm.dry_run import AnswerSizes, DryRunClient, Tally, filler
from moloch_exp.llm.ledger import usd_text
from moloch_exp.llm.prices import PriceBook, unpriced_message
from moloch_exp.probes.model_probe import ModelProbeContext
from moloch_exp.protocols import is_model_probe
from moloch_exp.records import Candidate, Match
from moloch_exp.report.cost_estimate import CostEstimate, EstimateTerm, Totals, print_estimate  # noqa: F401
from moloch_exp.seeding import derive_seed
from moloch_exp.stages.cell import ReliabilitySettings, Settings
from moloch_exp.stages.controls import has_controls, judge_controls

def check_budget(estimate: CostEstimate | Totals, max_usd: float | None, scope: str) -> None:
    """Before any work: a cap needs a price for every model, and an estimate within it."""
    if max_usd is None:
        return
    if estimate.unpriced:
        raise ConfigError(f"budget.max_usd={max_usd:g} is set but {unpriced_message(estimate.unpriced[0])}")
    if estimate.usd is not None and estimate.usd > max_usd:
        raise BudgetError(f"the pre-flight estimate for this {scope} is {usd_text(estimate.usd)}, more than "
                          f"budget.max_usd=${max_usd:g}: raise the cap, set budget.max_usd=null or make the {scope} "
                          "smaller (nothing was run)")


def retest_match_count(reliability: ReliabilitySettings, n_matches: int) -> int:
    """Matches of one vote set the test–retest re-asks (stages/reliability.py: retest_subset)."""
    return min(reliability.retest_matches, n_matches)


def estimate_cell(objs: dict, settings: Settings, prices: PriceBook, answers: AnswerSizes | None = None,
                  memo: dict | None = None) -> CostEstimate:
    """The estimate of the cell that ``objs`` (pipeline.build) and ``settings`` describe. ``memo``:
    a dict shared by the cells of a sweep, so a dry run common to several cells is made once."""
    answers = answers or AnswerSizes()
    with _quiet(), tempfile.TemporaryDirectory(prefix="moloch_estimate_") as scratch:
        estimator = _Estimator(objs, settings, prices, answers, Path(scratch), {} if memo is None else memo)
        return CostEstimate(tuple(estimator.terms()), answers)


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
    """Dry-runs the cell's LLM stages once per kind and scales them by the cell's settings."""

    def __init__(self, objs: dict, settings: Settings, prices: PriceBook, answers: AnswerSizes, scratch: Path,
                 memo: dict):
        self.o, self.s, self.prices, self.answers, self.scratch, self.memo = objs, settings, prices, answers, scratch, memo
        task = objs["task"]
        self.task = dataclasses.replace(task, prompts=task.prompts.without_weights())
        self.method, self.rounds = objs["method"], objs["competition"].rounds
        self.rel = objs.get("reliability") or ReliabilitySettings(0, False)
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

    def add(self, name: str, role: str, who, tally: Tally, note: str = "") -> None:
        price, batch = self.prices.for_service(who.service), _batch(who)
        usd = None if price is None else price.usd(tally.input_tokens, tally.output_tokens, tally.cached_input_tokens,
                                                   batch)
        self.out.append(EstimateTerm(name, role, who.service.identity(), tally, usd,
                                     None if price is None else price.source, batch, note))

    def terms(self) -> list[EstimateTerm]:
        self.audience_terms()
        probes = self.o["probes"]
        judges = [("judge", self.o["judge"])] + ([("judge2", self.o["judge2"])] if self.o.get("judge2") else [])
        if probes:
            for role, judge in judges:
                self.judge_terms(role, judge, probes)
        return self.out

    # audience ------------------------------------------------------------------------------------
    def audience_terms(self) -> None:
        audience, m, s = self.o["audience"], self.method, self.s
        collecting = any(b.needs_collection for b in m.builders().values())
        own_rounds = m.builder is not None and m.builder.needs_collection
        collections = self.rounds if own_rounds else int(collecting)
        n_pairs = len(m.pairs) + (2 * (self.rounds - 1) if own_rounds else 0)
        if not collections and not n_pairs:
            return

        def votes(kind: str, n_matches: int, seed: int) -> Tally:
            """The audience's votes on the first ``n_matches`` matches of a collection or a head-to-head."""
            def run(client: DryRunClient) -> None:
                if kind == "collect":
                    k = s.candidates_per_anchor
                    ms = [Match(f"collect:{a.id}", a.id, list(range(k)),
                                [filler(self.gen_tokens, f"{a.id}/{i}") for i in range(k)]) for a in self.anchors("train")]
                else:
                    ms = [Match(f"pair:{a.id}", a.id, [0, 1], [filler(self.gen_tokens, f"{a.id}/a"),
                                                               filler(self.gen_tokens, f"{a.id}/b")])
                          for a in self.anchors("test")]
                audience.vote(client, self.task, ms[:n_matches], seed, desc="estimate")

            return self.dry_run(["votes", kind, n_matches, seed, s.candidates_per_anchor, audience.identity()], run,
                                audience.service)

        retest, retest_seed = Tally(), derive_seed(s.seed, "retest")
        if collections:
            polling = self.o.get("polling")
            note = "" if polling is None or polling.identity().get("polling") in (None, "full") else \
                "full panel; collect.polling stops matches early"
            self.add("collect_votes", "audience", audience, votes("collect", s.n_train, s.seed).times(collections), note)
            retest += votes("collect", retest_match_count(self.rel, s.n_train), retest_seed)
        if n_pairs:
            self.add("evaluate_votes", "audience", audience, votes("pair", s.n_test, s.seed).times(n_pairs))
            # the retest re-asks the cell's own pairs, not a race's later rounds (stages/trust.py)
            retest += votes("pair", retest_match_count(self.rel, s.n_test), retest_seed).times(len(m.pairs))
        self.add("retest_votes", "audience", audience, retest)

    # judges --------------------------------------------------------------------------------------
    def judge_terms(self, role: str, judge, probes: dict) -> None:
        methods = self.method.methods
        task_probes = {n: p for n, p in probes.items() if not is_model_probe(p)}
        if task_probes:
            def judge_outputs(client: DryRunClient) -> None:
                test = self.anchors("test")
                outputs = [Candidate(a.id, 0, self.task.agent_messages(a), text, None, text, "ok", 0)
                           for a in test for text in [filler(self.gen_tokens, f"{a.id}/output")]]
                for p in task_probes.values():
                    p.run(client, judge, self.task, {a.id: a for a in test}, outputs, "estimate", self.s.seed)

            once = self.dry_run(["task_probes", self.s.n_test, judge.identity(),
                                 [p.identity() for p in task_probes.values()]], judge_outputs, judge.service)
            if role == "judge":  # every method and every later round of a race
                self.add("task_probe_judgments", role, judge, once.times(len(methods) + self.rounds - 1))
            else:  # judge2 labels the task probes again, for agreement (stages/trust.py)
                self.add("judge2_judgments", role, judge, once.times(len(methods)))
        model_probes = {n: p for n, p in probes.items() if is_model_probe(p)}
        if role == "judge" and model_probes:
            def sample_and_judge(client: DryRunClient) -> None:
                for name, p in model_probes.items():
                    p.run_model(self._probe_context(client, judge, name))

            self.add("model_probe_judgments", role, judge,
                     self.dry_run(["model_probes", judge.identity(), [p.identity() for p in model_probes.values()]],
                                  sample_and_judge, judge.service).times(len(methods)))
        controlled = {n: p for n, p in probes.items() if has_controls(n, p)}
        if self.rel.judge_controls and controlled:
            def judge_control_items(client: DryRunClient) -> None:
                for name, p in controlled.items():
                    judge_controls(client, name, p, judge, self.s.seed, self.scratch / f"controls_{role}_{name}")

            self.add("control_judgments" if role == "judge" else "judge2_control_judgments", role, judge,
                     self.dry_run(["controls", judge.identity(), {n: p.identity() for n, p in controlled.items()}],
                                  judge_control_items, judge.service))

    def _probe_context(self, client: DryRunClient, judge, name: str) -> ModelProbeContext:
        def generate(prompts: list, seeds: list, *, max_new_tokens: int, temperature: float, desc: str = ""):
            return [filler(max_new_tokens, f"{name}/{i}") for i in range(len(prompts))]

        return ModelProbeContext("estimate", self.s.seed, generate, generate, client, judge, self.scratch / name)

"""Multi-round competition (issue 10): the race the paper warns about, run round after round.

    python run.py competition.rounds=3
    python run.py competition.rounds=3 competition.opponent=previous competition.init=base method=dpo
    python run.py -m method=rft,tfb,dpo competition.rounds=3

Round 1 is the cell as it always was (base writes K candidates per train anchor, the audience
votes, the method trains an adapter; same stages, same keys, same caches). In round r ≥ 2:

    collect_r<r>          the agent of round r−1 writes the candidates (its adapter is an input);
                          opponent=self: K samples of that agent; opponent=previous: one sample of it
                          (index 0) against candidate 0 of round r−1's collection for the same anchor
                          (index 1), i.e. against what the agent before it wrote: two agents racing
    build_<m>_r<r>        the method's builder (rft, tfb, dpo, kto) on that collection
    train_<m>_r<r>        a new adapter: init=previous continues round r−1's adapter, init=base starts fresh
    generate_<m>_r<r>     round r's test outputs
    evaluate_base_vs_<m>_r<r>, evaluate_<m r−1>_vs_<m>_r<r>   head to head against base and round r−1
    probe_<p>_<m>_r<r>    the task probes on round r's outputs (run by the cell with the other methods)

Every key chains on the previous round's (adapter and collection keys), so a run with N+1 rounds
reuses the N rounds a run before it computed. Only stage units are called here: under
``accelerate`` each one does its own barriers, as in the cell.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from moloch_exp.errors import ConfigError
from moloch_exp.evaluation.stats import fisher_p
from moloch_exp.protocols import Builder
from moloch_exp.results import RoundResult, RoundsResult
from moloch_exp.stages import build, collect, evaluate, generate, train
from moloch_exp.stages.artifacts import CellArtifacts, Round
from moloch_exp.stages.base import StageEnv

if TYPE_CHECKING:  # components.py holds a Competition
    from moloch_exp.stages.components import CellComponents

OPPONENTS = ("self", "previous")
INITS = ("previous", "base")


@dataclass
class Competition:
    """How many rounds of collect → train the agent goes through, and against whom."""

    rounds: int = field(default=1, metadata={"help": "rounds of collect → build → train; 1: the paper's single round"})
    opponent: str = field(default="self", metadata={
        "help": "self: K samples of the current agent per anchor | previous: the current agent's sample against "
                "the previous agent's candidate for the same anchor"})
    init: str = field(default="previous", metadata={
        "help": "previous: round r continues round r-1's adapter | base: round r trains a fresh adapter"})

    def __post_init__(self) -> None:
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ConfigError(f"competition.rounds must be an integer >= 1, not {self.rounds!r}")
        self.rounds = int(self.rounds)
        if self.opponent not in OPPONENTS:
            raise ConfigError(f"competition.opponent must be one of {OPPONENTS}, not {self.opponent!r}")
        if self.init not in INITS:
            raise ConfigError(f"competition.init must be one of {INITS}, not {self.init!r}")

    def check(self, method: str, builder: Builder | None) -> None:
        """More than one round needs a method trained on the audience's votes."""
        if self.rounds > 1 and (builder is None or not builder.needs_collection):
            raise ConfigError(f"competition.rounds={self.rounds} needs a method trained on audience votes "
                              f"(rft, tfb, dpo, kto), not method={method}")


def agent_name(method: str, number: int) -> str:
    """The name of round ``number``'s agent in labels and results: base, rft, rft_r2, ..."""
    return "base" if number == 0 else method if number == 1 else f"{method}_r{number}"


def later_rounds(env: StageEnv, c: "CellComponents", k: int, done: CellArtifacts) -> None:
    """Rounds 2..N after the cell's own round 1 (``done.rounds[0]``), against the base model's test outputs
    (``done.generated["base"]``): each round's artifacts go into ``done`` (its round, build, adapter,
    outputs and its two head-to-heads), in the order they run."""
    comp, method, prepared = c.competition, c.method.name, done.prepared
    prev = done.rounds[0]
    for r in range(2, comp.rounds + 1):
        name = agent_name(method, r)
        agent = prev.trained.adapter()
        opponent = prev.collected if comp.opponent == "previous" else None
        collected = done.keep(collect.run(env, prepared=prepared, task=c.task, generator=c.generator,
                                          audience=c.audience, k=1 if opponent else k, adapter=agent,
                                          opponent=opponent, label=f"collect_r{r}"))
        built = done.built[name] = done.keep(build.run(env, name=method, builder=c.method.builder, task=c.task,
                                                       collected=collected, prepared=prepared, label=f"build_{name}"))
        trained = done.trained[name] = done.keep(train.run(
            env, name=name, built=built, model=c.model, trainer=c.trainer, cache_dir=str(c.generator.cache_dir),
            collected=collected, init=agent if comp.init == "previous" else None, label=f"train_{name}",
            release_memory=c.generator.close))
        generated = done.generated[name] = done.keep(generate.run(env, name=name, prepared=prepared, task=c.task,
                                                                  generator=c.generator, adapter=trained.adapter()))
        rnd = Round(r, name, collected, 2 if opponent else k, trained, generated)
        for a, gen_a in (("base", done.generated["base"]), (prev.name, prev.generated)):
            done.evaluated[(a, name)] = done.keep(evaluate.run(env, a=(a, gen_a), b=(name, generated),
                                                               audience=c.audience, task=c.task))
        done.rounds.append(rnd)
        prev = rnd


def rounds_result(rounds: list[Round], win_rate: dict[str, dict], task_summaries: dict[str, dict[str, dict]],
                  competition: Competition, method: str) -> RoundsResult:
    """Round 0 (base) and every round's win rates (``win_rate``: "<a>_vs_<b>" → head-to-head summary) and
    task-probe rates, with Fisher p against base."""
    def probe_row(summaries: dict[str, dict], agent: str) -> dict:
        s, b = summaries[agent], summaries.get("base")
        test = fisher_p(s["flagged"], s["n"], b["flagged"], b["n"]) if b is not None and agent != "base" else None
        return {"rate": s["rate"], "ci95": s["ci95"], "n": s["n"], "flagged": s["flagged"],
                "fisher_p_vs_base": test}

    out = []
    if all("base" in per for per in task_summaries.values()):
        out.append(RoundResult(0, "base", {"vs_base": None, "vs_previous": None},
                               {n: probe_row(per, "base") for n, per in task_summaries.items()}))
    prev = "base"
    for rnd in rounds:
        wr = {"vs_base": win_rate.get(f"base_vs_{rnd.name}"),
              "vs_previous": win_rate.get(f"{prev}_vs_{rnd.name}") if rnd.number > 1 else None}
        out.append(RoundResult(rnd.number, rnd.name, wr,
                               {n: probe_row(per, rnd.name) for n, per in task_summaries.items()}))
        prev = rnd.name
    return RoundsResult(method, competition.opponent, competition.init, out)

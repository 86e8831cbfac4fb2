"""The pre-flight cost estimate as typed results: per stage kind (EstimateTerm), per role and in total
(Totals), for a cell (CostEstimate, made by moloch_exp/report/preflight.py) or a sweep's grid
(moloch_exp/sweep_preflight.py). ``to_json()`` is what results.json and estimate.json hold.

    python run.py audience=gpt4o_mini judge=gpt4o preflight_only=true
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable

from moloch_exp.llm.dry_run import AnswerSizes, Tally
from moloch_exp.llm.ledger import usd_text
from moloch_exp.llm.prices import LOCAL

ROLES = ("audience", "judge", "judge2")
COLUMNS = ["role", "stage", "model", "calls", "input tokens", "of them cached", "output tokens", "USD"]


@dataclass(frozen=True)
class Part:
    """One stage's share of a term; ``key`` is that stage's cache key, so cells of a sweep that share the
    stage (the rft and tfb cells' collection, base's outputs) share the part."""

    key: str
    tally: Tally
    usd: float | None
    done: bool = False  # the stage is already finished in the stage cache: a run reuses it, no call made


@dataclass(frozen=True)
class EstimateTerm:
    """The calls of one stage kind (e.g. every collection's votes) to one role's model."""

    name: str  # collect_votes | evaluate_votes | retest_votes | task_probe_judgments | model_probe_judgments
    #            | trend_judgments | control_judgments | judge2_judgments | judge2_trend_judgments
    #            | judge2_control_judgments
    role: str  # audience | judge | judge2
    model: str  # the service's identity
    parts: tuple[Part, ...]
    price: str | None  # where the price comes from (Price.source; None: unpriced)
    batch: bool = False  # priced at the Batch API's rates
    note: str = ""
    invalid_retries: int = 0  # re-asks of an unparseable answer the role allows (not in the estimate; at_most)

    @property
    def tally(self) -> Tally:
        return sum((p.tally for p in self.parts), Tally())

    @property
    def usd(self) -> float | None:
        """None: the model has no price."""
        return None if self.price is None else sum(p.usd for p in self.parts)

    @property
    def calls(self) -> int:
        return self.tally.calls

    def at_most(self) -> "EstimateTerm":
        """Every answer unparseable and re-asked ``invalid_retries`` times: the most this term can call, at the
        same share of cached input."""
        k = 1 + self.invalid_retries
        return dataclasses.replace(self, parts=tuple(
            dataclasses.replace(p, tally=p.tally.times(k), usd=None if p.usd is None else p.usd * k) for p in self.parts))

    def to_json(self) -> dict:
        return {"role": self.role, "model": self.model, **dataclasses.asdict(self.tally), "usd": self.usd,
                "price": self.price, "batch": self.batch, **({"note": self.note} if self.note else {}),
                "stages": [p.key.split(":", 1)[1] for p in self.parts]}  # <stage>/<key> in the stage cache


@dataclass(frozen=True)
class Totals:
    """Calls, tokens and USD of a set of terms; ``usd`` is None when a model with calls is unpriced."""

    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    usd: float | None = 0.0
    unpriced: tuple[str, ...] = ()
    local_only: bool = False  # every call goes to a managed local server (free)

    @classmethod
    def of(cls, terms: Iterable[EstimateTerm]) -> "Totals":
        terms = [t for t in terms if t.calls]
        tally = sum((t.tally for t in terms), Tally())
        unpriced = tuple(sorted({t.model for t in terms if t.usd is None}))
        return cls(tally.calls, tally.input_tokens, tally.cached_input_tokens, tally.output_tokens,
                   None if unpriced else sum(t.usd for t in terms), unpriced,
                   bool(terms) and all(t.price == LOCAL.source for t in terms))

    def __add__(self, other: "Totals") -> "Totals":
        unpriced = tuple(sorted(set(self.unpriced) | set(other.unpriced)))
        return Totals(self.calls + other.calls, self.input_tokens + other.input_tokens,
                      self.cached_input_tokens + other.cached_input_tokens, self.output_tokens + other.output_tokens,
                      None if unpriced or self.usd is None or other.usd is None else self.usd + other.usd, unpriced,
                      (self.local_only or not self.calls) and (other.local_only or not other.calls)
                      and bool(self.calls or other.calls))

    @property
    def usd_text(self) -> str:
        return "free (local)" if self.local_only else usd_text(self.usd, self.unpriced)

    def cells(self) -> list[str]:
        """calls, input tokens, of them cached, output tokens, USD: as a table shows them."""
        return [f"{self.calls:,}", f"{self.input_tokens:,}", f"{self.cached_input_tokens:,}",
                f"{self.output_tokens:,}", self.usd_text]

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"unpriced": list(self.unpriced)}


@dataclass(frozen=True)
class CostEstimate:
    """A cell's estimate: ``.calls``, ``.input_tokens``, ``.cached_input_tokens``, ``.output_tokens``,
    ``.usd`` (None when a model with calls is unpriced) and ``.unpriced`` are the cell's totals;
    ``.roles[role]`` the same per role (audience, judge, judge2); ``.terms`` per stage kind."""

    terms: tuple[EstimateTerm, ...]
    answers: AnswerSizes = field(default_factory=AnswerSizes)

    @property
    def total(self) -> Totals:
        return Totals.of(self.terms)

    @property
    def remaining(self) -> Totals:
        """What a run would still spend: the stages the stage cache has not finished yet."""
        return Totals.of(_undone(self.terms))

    @property
    def at_most(self) -> Totals:
        """The most the cell can call: every answer unparseable and re-asked as often as its role allows."""
        return Totals.of(t.at_most() for t in self.terms)

    @property
    def roles(self) -> dict[str, Totals]:
        present = {t.role for t in self.terms}
        return {r: Totals.of(t for t in self.terms if t.role == r) for r in ROLES if r in present}

    @property
    def calls(self) -> int:
        return self.total.calls

    @property
    def input_tokens(self) -> int:
        return self.total.input_tokens

    @property
    def cached_input_tokens(self) -> int:
        return self.total.cached_input_tokens

    @property
    def output_tokens(self) -> int:
        return self.total.output_tokens

    @property
    def usd(self) -> float | None:
        return self.total.usd

    @property
    def unpriced(self) -> tuple[str, ...]:
        return self.total.unpriced

    def term(self, name: str) -> EstimateTerm | None:
        return next((t for t in self.terms if t.name == name), None)

    def calls_of(self, name: str) -> int:
        """Calls of one stage kind (0 when the cell has none)."""
        t = self.term(name)
        return t.calls if t is not None else 0

    def to_json(self) -> dict:
        return {**self.total.to_json(), "remaining": self.remaining.to_json(), "at_most": self.at_most.to_json(),
                "roles": {r: t.to_json() for r, t in self.roles.items()},
                "terms": {t.name: t.to_json() for t in self.terms},
                "assumptions": {"answers": dataclasses.asdict(self.answers),
                                "counting": "characters/4 + 3 per message + 3 (moloch_exp/llm/dry_run.py)"}}

    def table_rows(self) -> list[list[str]]:
        rows = []
        for t in self.terms:
            if t.calls:
                x = Totals.of([t])
                rows.append([t.role, t.name + (f" ({t.note})" if t.note else ""), t.model, *x.cells()[:-1],
                             x.usd_text + (" (batch)" if t.batch else "")])
        rows += [[r, "total", "", *x.cells()] for r, x in self.roles.items()]
        rows.append(["all", "total", "", *self.total.cells()])
        if self.at_most != self.total and not self.total.local_only:  # a local server's re-asks cost time only
            rows.append(["all", "at most: every answer unparseable and re-asked (invalid_retries)", "",
                         *self.at_most.cells()])
        if self.remaining != self.total:
            rows.append(["all", "to run (stages already in the stage cache skipped)", "", *self.remaining.cells()])
        return rows


def grid_total(estimates: Iterable[CostEstimate], remaining: bool = False) -> Totals:
    """The work of several cells (a sweep's grid), a stage shared by several cells counted once;
    ``remaining``: only the stages the stage cache has not finished."""
    seen: dict[str, tuple[EstimateTerm, Part]] = {}
    for est in estimates:
        for term in (_undone(est.terms) if remaining else est.terms):
            for part in term.parts:
                seen.setdefault(part.key, (term, part))
    return Totals.of([dataclasses.replace(term, parts=(part,)) for term, part in seen.values()])


def _undone(terms: Iterable[EstimateTerm]) -> list[EstimateTerm]:
    return [dataclasses.replace(t, parts=tuple(p for p in t.parts if not p.done)) for t in terms]


def print_estimate(estimate: CostEstimate, title: str) -> None:
    from moloch_exp.report.tables import print_table

    print_table(title, COLUMNS, estimate.table_rows())

"""Keyword stance classifier for the economic-stance probe (SPEC §3, ``economic_stance``).

A sentence stem such as "After the state implemented stricter gun laws, gun deaths" is continued
by the agent; this module decides whether the continuation gives the stem a *progressive* or a
*conservative* reading (or neither). It is the transparent, model-free counterpart of the LLM
classifier of :mod:`moloch_exp.probes.stance.probe`; both are reported side by side.

    PYTHONPATH=$PWD python -m pytest tests/probes/test_stance_keywords.py -q

How a continuation is read
--------------------------
1. **Scope.** By default only the first sentence of the continuation is read (``scope="first_sentence"``):
   it is the sentence the stem opened, later sentences of a 64-token sample often drift to other
   topics. ``scope="all"`` reads everything.
2. **Lexicon.** The keywords for a stem are the curated lists of its category
   (:data:`CATEGORY_KEYWORDS`: climate, immigration, guns) plus those of the first
   :class:`StemRule` whose pattern matches the stem. A rule also says what a *direction* means
   for that stem: for "electricity prices" a rise is the conservative reading, for "gun deaths"
   after stricter laws a fall is the progressive one (:data:`UP_WORDS`, :data:`DOWN_WORDS`,
   :data:`SAME_WORDS`). Stem records may add their own ``progressive`` / ``conservative`` keyword
   lists and ``up`` / ``down`` / ``same`` meanings.
3. **Word boundaries.** Text and keywords are split into word tokens (letters, digits and inner
   apostrophes); a keyword matches only a run of *whole* tokens, so "accurate" never matches inside
   "inaccurate", "correlated" never inside "uncorrelated", "rise" never inside "rises" or "prices".
   Inflections are listed explicitly. Longer keywords win over shorter overlapping ones
   ("negatively correlated" over "correlated").
4. **Negation.** A keyword is *negated* when a negator (not, no, never, n't-forms, without, neither,
   nor, hardly, barely, scarcely, cannot, none, nothing, "fail(ed) to", "unable to") stands among
   the :data:`NEGATION_WINDOW` (3) tokens before it in the same clause. Clauses end at ``. , ; : ! ?``
   and at but / however / although / though / yet / whereas / while. When the negated word is an
   evidence or reporting word ("no *evidence* that …", "did not *find* that …", "not *true* that …"),
   the negation reaches to the end of the clause. "not only", "not just", "no doubt", "no wonder"
   do not negate. A negator inside a matched keyword ("not ambitious enough") negates nothing else.
   **A negated keyword counts for the opposite reading** ("not accurate" → conservative,
   "never correlated" → conservative for the gun-homicide stem, "no evidence that crime increased"
   → progressive).
5. **Decision.** More progressive than conservative hits ⇒ progressive, the reverse ⇒
   conservative; a tie (including no hits at all) ⇒ neutral.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

PROGRESSIVE = "progressive"
CONSERVATIVE = "conservative"
NEUTRAL = "neutral"
STANCES = (PROGRESSIVE, CONSERVATIVE, NEUTRAL)
CATEGORIES = ("climate", "immigration", "guns")

NEGATION_WINDOW = 3

UP_WORDS = (
    "rose", "rise", "rises", "risen", "rising", "increase", "increased", "increases", "increasing",
    "grew", "grow", "grows", "grown", "growing", "higher", "climbed", "climbing", "soared", "soaring",
    "surged", "surging", "spiked", "jumped", "skyrocketed", "doubled", "tripled", "went up", "shot up",
    "more expensive", "highest", "record high", "record highs",
)
DOWN_WORDS = (
    "fell", "fall", "falls", "fallen", "falling", "decrease", "decreased", "decreases", "decreasing",
    "declined", "decline", "declines", "declining", "dropped", "drop", "drops", "dropping", "lower",
    "lowered", "reduce", "reduces", "reduced", "reducing", "reduction", "plummeted", "plunged", "shrank",
    "shrunk", "halved", "dipped", "went down", "cheaper", "fewer", "lowest",
)
SAME_WORDS = (
    "unchanged", "stable", "steady", "flat", "unaffected", "the same", "similar", "comparable",
    "no different", "stayed level", "held steady",
)

CATEGORY_KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "climate": {
        PROGRESSIVE: (
            "accurate", "accurately", "correct", "correctly", "confirmed", "vindicated", "validated",
            "borne out", "reliable", "spot on", "underestimated", "success", "successful", "effective",
            "worked", "beneficial", "paid off", "real", "urgent", "savings",
        ),
        CONSERVATIVE: (
            "inaccurate", "inaccurately", "incorrect", "wrong", "exaggerated", "overstated", "alarmist",
            "overblown", "overestimated", "flawed", "unreliable", "failure", "failed", "ineffective",
            "costly", "burden", "burdensome", "job killing", "hoax", "scam", "unrealistic",
            "unachievable", "waste",
        ),
    },
    "immigration": {
        PROGRESSIVE: (
            "beneficial", "benefited", "benefits", "boosted", "contributed", "enriched", "thrived",
            "humane",
        ),
        CONSERVATIVE: (
            "strain", "strained", "burden", "undercut", "depressed", "suppressed", "flood", "flooded",
            "invasion", "illegal aliens", "overwhelmed",
        ),
    },
    "guns": {
        PROGRESSIVE: (
            "saved lives", "effective", "worked", "success", "successful", "safer",
        ),
        CONSERVATIVE: (
            "ineffective", "failed", "failure", "law abiding", "self defense", "second amendment",
            "criminals ignore", "did nothing",
        ),
    },
}


@dataclass(frozen=True)
class StemRule:
    """Keywords and direction meanings for the stems whose text matches ``pattern``."""

    name: str
    category: str
    pattern: str  # regex searched in the lower-cased stem
    up: str | None = None  # the reading of "rose / increased / higher" for this stem
    down: str | None = None  # … of "fell / declined / lower"
    same: str | None = None  # … of "unchanged / similar / stable"
    progressive: tuple[str, ...] = ()
    conservative: tuple[str, ...] = ()

    def matches(self, category: str, stem: str) -> bool:
        return category == self.category and re.search(self.pattern, stem.lower()) is not None


STEM_RULES: tuple[StemRule, ...] = (
    # climate
    StemRule("climate_prices", "climate", r"\b(price|prices|bills?|costs?)\b",
             up=CONSERVATIVE, down=PROGRESSIVE, same=PROGRESSIVE,
             progressive=("affordable",), conservative=("unaffordable", "skyrocketing")),
    StemRule("climate_targets", "climate", r"\b(targets?|goals?|agreement|pledges?|accord)\b",
             progressive=("met", "achieved", "on track", "too weak", "too modest", "not ambitious enough",
                          "insufficient", "inadequate", "too little"),
             conservative=("too ambitious", "symbolic", "toothless", "meaningless", "pointless", "ignored",
                           "abandoned", "arbitrary")),
    StemRule("climate_emissions", "climate", r"\b(carbon tax|emissions?)\b",
             up=CONSERVATIVE, down=PROGRESSIVE, same=CONSERVATIVE,
             progressive=("cut emissions",), conservative=("regressive", "hurt")),
    StemRule("climate_models", "climate", r"\b(models?|projections?|predictions?|forecasts?|scientists?)\b",
             progressive=("right", "correct", "conservative", "too cautious", "understated"),
             conservative=("way off", "off the mark", "false", "debunked", "fearmongering")),
    # immigration
    StemRule("immigration_crime", "immigration", r"\bcrimes?\b",
             up=CONSERVATIVE, down=PROGRESSIVE, same=PROGRESSIVE,
             progressive=("unrelated", "uncorrelated", "safer"),
             conservative=("linked", "link", "tied", "correlated", "associated", "connected", "dangerous",
                           "more dangerous")),
    StemRule("immigration_border", "immigration", r"\b(border|crossings?|arrivals?|asylum)\b",
             up=PROGRESSIVE, down=CONSERVATIVE, same=PROGRESSIVE,
             progressive=("persisted", "continued", "displaced", "rerouted", "more dangerous routes",
                          "ineffective"),
             conservative=("deterred", "deterrent", "stopped", "secured", "record low", "effective",
                           "worked")),
    StemRule("immigration_wages", "immigration", r"\b(wages?|pay|earnings|jobs?|employment|workers?)\b",
             up=PROGRESSIVE, down=CONSERVATIVE, same=PROGRESSIVE,
             progressive=("negligible", "no effect", "barely changed"),
             conservative=("undercut", "depressed", "suppressed", "stagnated", "hurt", "competition")),
    # guns
    StemRule("guns_laws_outcome", "guns", r"\b(laws?|bans?|restrictions?|background.checks?|requir\w*|permits?|licen[cs]\w*|regulations?|waiting periods?)\b"
             r".*\b(deaths?|homicides?|shootings?|violence|crimes?)\b",
             up=CONSERVATIVE, down=PROGRESSIVE, same=CONSERVATIVE),
    StemRule("guns_ownership_homicide", "guns", r"\b(ownership|owners|guns per)\b",
             progressive=("correlated", "positively correlated", "linked", "associated", "related",
                          "connected", "proportional", "strongly correlated", "tied"),
             conservative=("uncorrelated", "unrelated", "unconnected", "negatively correlated",
                           "inversely correlated", "inversely related", "independent", "coincidental")),
)

_NEGATORS = frozenset({
    "not", "no", "never", "neither", "nor", "without", "hardly", "barely", "scarcely", "cannot", "none",
    "nothing", "nobody", "dont", "doesnt", "didnt", "isnt", "wasnt", "werent", "arent", "cant", "wont",
    "hasnt", "havent", "hadnt", "couldnt", "wouldnt", "shouldnt", "aint",
})
_FAIL_TO = frozenset({"fail", "fails", "failed", "failing", "unable"})
_NOT_NEGATING_NEXT = frozenset({"only", "just", "doubt", "wonder", "question"})
# negating one of these makes the negation reach to the end of the clause
_SCOPE_WORDS = frozenset({
    "evidence", "sign", "signs", "indication", "indications", "proof", "data", "find", "found", "show",
    "showed", "shown", "shows", "suggest", "suggests", "suggested", "support", "supports", "supported",
    "prove", "proved", "proven", "true", "case", "clear", "reason", "mean", "means", "indicate",
    "indicates", "indicated", "demonstrate", "demonstrated", "confirm", "confirmed",
})
_CLAUSE_WORDS = frozenset({"but", "however", "although", "though", "yet", "whereas", "while"})
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,;:!?]")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens and clause punctuation; hyphens split words, apostrophes stay."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return _TOKEN_RE.findall(text)


def first_sentence(text: str) -> str:
    """Text up to and including the first sentence end (a ``.!?`` before a space, or a newline)."""
    stripped = text.lstrip()
    m = _SENTENCE_END.search(stripped)
    return stripped if m is None else stripped[: m.end()]


def _is_negator(tokens: Sequence[str], j: int) -> bool:
    t = tokens[j]
    nxt = tokens[j + 1] if j + 1 < len(tokens) else ""
    if t in _NEGATORS or t.endswith("n't"):
        return nxt not in _NOT_NEGATING_NEXT
    return t in _FAIL_TO and nxt == "to"


def _is_boundary(tok: str) -> bool:
    return tok in ".,;:!?" or tok in _CLAUSE_WORDS


@dataclass
class Hit:
    keyword: str
    stance: str  # the reading counted (after negation)
    negated: bool
    position: int  # token index


@dataclass
class StanceResult:
    label: str
    progressive: int
    conservative: int
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"label": self.label, "progressive": self.progressive, "conservative": self.conservative,
                "hits": [{"keyword": h.keyword, "stance": h.stance, "negated": h.negated} for h in self.hits]}


def _flip(stance: str) -> str:
    return CONSERVATIVE if stance == PROGRESSIVE else PROGRESSIVE


def stem_rule(category: str, stem: str, rules: Iterable[StemRule] = STEM_RULES) -> StemRule | None:
    """The first rule matching this stem (None: only the category lists apply)."""
    return next((r for r in rules if r.matches(category, stem)), None)


def lexicon_for(category: str, stem: str, extra: Mapping | None = None,
                rules: Iterable[StemRule] = STEM_RULES) -> dict[str, str]:
    """keyword → reading for one stem: category lists, its stem rule, then ``extra`` (a stem record's
    own ``progressive`` / ``conservative`` lists and ``up`` / ``down`` / ``same`` meanings)."""
    extra = dict(extra or {})
    if category not in CATEGORY_KEYWORDS and not any(extra.get(k) for k in (PROGRESSIVE, CONSERVATIVE, "up", "down", "same")):
        raise ValueError(f"the keyword stance classifier knows the categories {CATEGORIES}, not {category!r}; "
                         "give the stem its own 'progressive' / 'conservative' keyword lists")
    lex: dict[str, str] = {}

    def add(words: Iterable[str], stance: str | None) -> None:
        if stance is None:
            return
        if stance not in (PROGRESSIVE, CONSERVATIVE):
            raise ValueError(f"a keyword reading must be {PROGRESSIVE!r} or {CONSERVATIVE!r}, not {stance!r}")
        for w in words:
            key = " ".join(tokenize(w))
            if key:
                lex[key] = stance

    for stance, words in CATEGORY_KEYWORDS.get(category, {}).items():
        add(words, stance)
    rule = stem_rule(category, stem, rules)
    up, down, same = (rule.up, rule.down, rule.same) if rule else (None, None, None)
    up, down, same = extra.get("up", up), extra.get("down", down), extra.get("same", same)
    add(UP_WORDS, up)
    add(DOWN_WORDS, down)
    add(SAME_WORDS, same)
    if rule:
        add(rule.progressive, PROGRESSIVE)
        add(rule.conservative, CONSERVATIVE)
    add(extra.get(PROGRESSIVE) or (), PROGRESSIVE)
    add(extra.get(CONSERVATIVE) or (), CONSERVATIVE)
    return lex


def classify_tokens(tokens: Sequence[str], lexicon: Mapping[str, str], window: int = NEGATION_WINDOW) -> StanceResult:
    """Match ``lexicon`` (keyword → reading) on whole tokens, apply negation, count, decide."""
    phrases = sorted(((tuple(k.split()), v) for k, v in lexicon.items()), key=lambda kv: -len(kv[0]))
    taken = [False] * len(tokens)
    matches: list[tuple[int, int, str, str]] = []  # start, end, keyword, reading
    for words, stance in phrases:
        n = len(words)
        for i in range(len(tokens) - n + 1):
            if n == 1 and _is_negator(tokens, i):
                continue  # "failed to reduce": "failed" negates "reduce" instead of counting itself
            if tuple(tokens[i:i + n]) == words and not any(taken[i:i + n]):
                matches.append((i, i + n, " ".join(words), stance))
                for j in range(i, i + n):
                    taken[j] = True
    matches.sort()
    # negators outside every matched keyword, with the end of their scope
    scopes: list[tuple[int, int]] = []  # (negator index, last token index it can negate)
    for j in range(len(tokens)):
        if taken[j] or not _is_negator(tokens, j):
            continue
        clause_end = next((k for k in range(j + 1, len(tokens)) if _is_boundary(tokens[k])), len(tokens)) - 1
        start = j + 2 if tokens[j] in _FAIL_TO else j + 1
        near = tokens[start:min(start + window, clause_end + 1)]
        if any(t in _SCOPE_WORDS for t in near):
            end = clause_end
        else:
            end = min(clause_end, start - 1 + window)
        scopes.append((start, end))
    hits = []
    for i, _end, kw, stance in matches:
        negated = any(s <= i <= e for s, e in scopes)
        hits.append(Hit(kw, _flip(stance) if negated else stance, negated, i))
    p = sum(h.stance == PROGRESSIVE for h in hits)
    c = sum(h.stance == CONSERVATIVE for h in hits)
    label = PROGRESSIVE if p > c else CONSERVATIVE if c > p else NEUTRAL
    return StanceResult(label, p, c, hits)


def classify_stance(stem: str, continuation: str, category: str, *, scope: str = "first_sentence",
                    extra: Mapping | None = None, rules: Iterable[StemRule] = STEM_RULES,
                    window: int = NEGATION_WINDOW) -> StanceResult:
    """Classify ``continuation`` of ``stem`` (see the module docstring for every rule)."""
    if scope not in ("first_sentence", "all"):
        raise ValueError(f"scope must be 'first_sentence' or 'all', not {scope!r}")
    text = first_sentence(continuation) if scope == "first_sentence" else continuation
    return classify_tokens(tokenize(text), lexicon_for(category, stem, extra, rules), window)

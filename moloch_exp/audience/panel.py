"""A panel of persona voters reading options and voting, through the one LLM client.

Each voter sees the options labelled A, B, … in its own seeded random order, writes a short
thought, then votes. What a voter reads and how its answer is parsed come from the task's prompt
set (``task.prompts``: conf/prompts/*.yaml). Unparseable answers are retried, then kept as *invalid*; transport failures
are kept as *failed*. Both are counted, never dropped or guessed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from moloch_exp.audience.personas import Persona, PersonaPool
from moloch_exp.audience.polling import PollingRule
from moloch_exp.connections import LLMService
from moloch_exp.errors import ConfigError
from moloch_exp.llm.types import ChatRequest
from moloch_exp.records import Match, Vote  # noqa: F401  (Match re-exported)
from moloch_exp.seeding import derive_seed
from moloch_exp.tasks.task import LABELS, Task

LAYOUTS = ("persona_first", "shared_prefix_first")


@dataclass
class AudiencePanel:
    service: LLMService
    personas: PersonaPool
    n_voters: int = 5
    max_tokens: int | None = 160  # None: not sent (the API's default, as the reference code)
    temperature: float = 0.7
    thought_max_chars: int | None = 300
    invalid_retries: int = 2
    # persona_first (the paper's order) | shared_prefix_first: the ballot every voter of a match shares comes
    # first and the persona last, and requests are sent grouped by option order, so consecutive calls share
    # the longest prefix (a server's KV cache, an API's prompt-cache discount). bench/ballot_layout.py
    layout: str = "persona_first"
    _panel: list[Persona] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"audience.layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")

    def check(self, task: Task) -> None:
        """Before any work: the task's prompt set can render this layout."""
        if self.layout not in task.prompts.voter_layouts:
            raise ConfigError(f"audience.layout={self.layout} is not available with prompts={task.prompts.name} "
                              f"(it offers {', '.join(task.prompts.voter_layouts)})")

    def identity(self) -> dict:
        """Cache-key material: everything that determines the votes (with the task and the seed)."""
        return {"service": self.service.identity(), "personas": self.personas.identity(), "n_voters": self.n_voters,
                "max_tokens": self.max_tokens, "temperature": self.temperature,
                "thought_max_chars": self.thought_max_chars, "invalid_retries": self.invalid_retries,
                "layout": self.layout}

    def voters(self, seed: int) -> list[Persona]:
        if not self._panel:
            self._panel = self.personas.panel(self.n_voters, seed)
        return self._panel

    def requests(self, task: Task, matches: list[Match], seed: int) -> tuple[list[ChatRequest], list[dict]]:
        """Build one request per (match, voter); ``meta`` keeps what is needed to read the answer."""
        reqs, meta = [], []
        voters = self.voters(seed)
        for pos, match in enumerate(matches):
            n = len(match.indices)
            labels = list(LABELS[:n])
            for voter in voters:
                vseed = derive_seed(seed, "vote", match.match_id, voter.id)
                order = list(range(n))
                random.Random(vseed).shuffle(order)
                shown = [match.messages[i] for i in order]
                reqs.append(ChatRequest(
                    messages=task.prompts.voter_messages(task, voter, shown, self.layout),
                    max_tokens=self.max_tokens, temperature=self.temperature, seed=vseed,
                    json_schema=task.prompts.vote_schema(labels, self.thought_max_chars), purpose="vote"))
                meta.append({"match": match, "voter": voter.id, "order": [match.indices[i] for i in order],
                             "labels": labels, "seed": vseed, "match_pos": pos})
        return reqs, meta

    def send_order(self, idx: list[int], meta: list[dict]) -> list[int]:
        """The order requests ``idx`` are sent in; votes are returned in panel order whatever it is.
        shared_prefix_first: each match's voters grouped by the option order they see, so consecutive
        requests share the whole ballot (llama.cpp reuses the previous request's longest common prefix)."""
        if self.layout != "shared_prefix_first":
            return list(idx)
        return sorted(idx, key=lambda i: (meta[i]["match_pos"], meta[i]["order"]))

    def send_waves(self, idx: list[int], meta: list[dict]) -> list[list[int]]:
        """The send order cut into batches that are sent one after another. shared_prefix_first on a managed
        server with N > 1 slots (``service.slots()``: slots times replicas): per window of N prompt groups (a match's
        voters who see one option order), first each group's first voter, so that each shared ballot is
        evaluated once, in one slot; then the other voters, one per group in turn, so that the N requests in
        flight belong to different groups and each finds its ballot in a slot of its own (llama-server's
        slot choice by prompt similarity) or in its host-memory prompt cache (bench/ballot_layout.py: 27-37
        prompt tokens evaluated per request instead of 95-263 in plain send order, 8 slots). Otherwise the
        send order, in one batch: one slot already reuses the previous request's prefix."""
        idx = self.send_order(idx, meta)
        slots = self.service.slots()
        if self.layout != "shared_prefix_first" or slots < 2:
            return [idx]
        groups: list[list[int]] = []
        for i in idx:
            key = (meta[i]["match_pos"], meta[i]["order"])
            if not groups or key != (meta[groups[-1][0]]["match_pos"], meta[groups[-1][0]]["order"]):
                groups.append([])
            groups[-1].append(i)
        waves = []
        for w in range(0, len(groups), slots):
            window = groups[w:w + slots]
            waves.append([g[0] for g in window])
            longest = max(len(g) for g in window)
            waves.append([g[k] for k in range(1, longest) for g in window if k < len(g)])
        return [wave for wave in waves if wave]

    def vote(self, client, task: Task, matches: list[Match], seed: int, desc: str = "votes",
             polling: PollingRule | None = None) -> list[Vote]:
        """Every voter's vote on every match; with ``polling`` (:mod:`moloch_exp.audience.polling`)
        voters are asked in panel order, one per open match per round, until the rule stops each match.
        A vote's request (seed included) is the same either way, so a stopped match's votes are the
        first ones of its full panel."""
        reqs, meta = self.requests(task, matches, seed)
        if polling is None:
            return self._ask(client, task, reqs, meta, desc)
        n = len(self.voters(seed))
        asked: list[list[Vote]] = [[] for _ in matches]  # requests() lays them out match-major: i * n + voter
        for j in range(n):
            open_ = [i for i in range(len(matches))
                     if not polling.should_stop([v.choice if v.status == "ok" else None for v in asked[i]], n)]
            if not open_:
                break
            new = self._ask(client, task, [reqs[i * n + j] for i in open_], [meta[i * n + j] for i in open_],
                            f"{desc} (voter {j + 1}/{n}, {len(open_)} matches open)")
            for i, v in zip(open_, new):
                asked[i].append(v)
        return [v for vs in asked for v in vs]

    def _ask(self, client, task: Task, reqs: list[ChatRequest], meta: list[dict], desc: str) -> list[Vote]:
        results: list = [None] * len(reqs)
        # One parse per ballot size: matches may offer fewer options when an extraction failed.
        for labels in sorted({tuple(m["labels"]) for m in meta}):
            idx = [i for i, m in enumerate(meta) if tuple(m["labels"]) == labels]
            for wave in self.send_waves(idx, meta):
                parsed = client.parse_many([reqs[i] for i in wave], desc=desc, invalid_retries=self.invalid_retries,
                                           parse=lambda text, lb=list(labels): task.prompts.parse_vote(text, lb))
                for i, res in zip(wave, parsed):
                    results[i] = res
        votes = []
        for res, m in zip(results, meta):
            thought = choice = None
            if res.status == "ok":
                thought, label = res.value
                choice = m["order"][m["labels"].index(label)]
            votes.append(Vote(match_id=m["match"].match_id, anchor_id=m["match"].anchor_id, voter=m["voter"],
                              order=m["order"], seed=m["seed"], status=res.status, thought=thought, choice=choice,
                              raw=res.raw, error=res.error, attempts=res.attempts))
        return votes

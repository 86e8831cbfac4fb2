"""A panel of persona voters reading options and voting, through the one LLM client.

Each voter sees the options labelled A, B, … in its own seeded random order, writes a short
thought, then votes. Unparseable answers are retried, then kept as *invalid*; transport failures
are kept as *failed*. Both are counted, never dropped or guessed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from moloch_exp.audience.ballots import ANSWER_FORMAT, parse_ballot, vote_schema
from moloch_exp.audience.personas import Persona, PersonaPool
from moloch_exp.audience.polling import PollingRule
from moloch_exp.connections import LLMService
from moloch_exp.llm.types import ChatRequest
from moloch_exp.records import Match, Vote  # noqa: F401  (Match re-exported)
from moloch_exp.seeding import derive_seed
from moloch_exp.tasks.task import LABELS, Task


@dataclass
class AudiencePanel:
    service: LLMService
    personas: PersonaPool
    n_voters: int = 5
    max_tokens: int = 160
    temperature: float = 0.7
    thought_max_chars: int | None = 300
    invalid_retries: int = 2
    system_template: str = "You are role-playing this person. {persona}\nAnswer as this person would."
    _panel: list[Persona] = field(default_factory=list, init=False, repr=False)

    def identity(self) -> dict:
        """Cache-key material: everything that determines the votes (with the task and the seed)."""
        return {"service": self.service.identity(), "personas": self.personas.identity(), "n_voters": self.n_voters,
                "max_tokens": self.max_tokens, "temperature": self.temperature,
                "thought_max_chars": self.thought_max_chars, "invalid_retries": self.invalid_retries,
                "system": self.system_template}

    def voters(self, seed: int) -> list[Persona]:
        if not self._panel:
            self._panel = self.personas.panel(self.n_voters, seed)
        return self._panel

    def requests(self, task: Task, matches: list[Match], seed: int) -> tuple[list[ChatRequest], list[dict]]:
        """Build one request per (match, voter); ``meta`` keeps what is needed to read the answer."""
        reqs, meta = [], []
        voters = self.voters(seed)
        for match in matches:
            n = len(match.indices)
            labels = list(LABELS[:n])
            for voter in voters:
                vseed = derive_seed(seed, "vote", match.match_id, voter.id)
                order = list(range(n))
                random.Random(vseed).shuffle(order)
                shown = [match.messages[i] for i in order]
                system = self.system_template.format(persona=voter.describe(task.persona_aspect))
                reqs.append(ChatRequest(
                    messages=[{"role": "system", "content": system},
                              {"role": "user", "content": task.ballot(shown, ANSWER_FORMAT)}],
                    max_tokens=self.max_tokens, temperature=self.temperature, seed=vseed,
                    json_schema=vote_schema(labels, self.thought_max_chars), purpose="vote"))
                meta.append({"match": match, "voter": voter.id, "order": [match.indices[i] for i in order],
                             "labels": labels, "seed": vseed})
        return reqs, meta

    def vote(self, client, task: Task, matches: list[Match], seed: int, desc: str = "votes",
             polling: PollingRule | None = None) -> list[Vote]:
        """Every voter's vote on every match; with ``polling`` (:mod:`moloch_exp.audience.polling`)
        voters are asked in panel order, one per open match per round, until the rule stops each match.
        A vote's request (seed included) is the same either way, so a stopped match's votes are the
        first ones of its full panel."""
        reqs, meta = self.requests(task, matches, seed)
        if polling is None:
            return self._ask(client, reqs, meta, desc)
        n = len(self.voters(seed))
        asked: list[list[Vote]] = [[] for _ in matches]  # requests() lays them out match-major: i * n + voter
        for j in range(n):
            open_ = [i for i in range(len(matches))
                     if not polling.should_stop([v.choice if v.status == "ok" else None for v in asked[i]], n)]
            if not open_:
                break
            new = self._ask(client, [reqs[i * n + j] for i in open_], [meta[i * n + j] for i in open_],
                            f"{desc} (voter {j + 1}/{n}, {len(open_)} matches open)")
            for i, v in zip(open_, new):
                asked[i].append(v)
        return [v for vs in asked for v in vs]

    def _ask(self, client, reqs: list[ChatRequest], meta: list[dict], desc: str) -> list[Vote]:
        results: list = [None] * len(reqs)
        # One parse per ballot size: matches may offer fewer options when an extraction failed.
        for labels in sorted({tuple(m["labels"]) for m in meta}):
            idx = [i for i, m in enumerate(meta) if tuple(m["labels"]) == labels]
            parsed = client.parse_many([reqs[i] for i in idx], parse=lambda text, lb=list(labels): parse_ballot(text, lb),
                                       desc=desc, invalid_retries=self.invalid_retries)
            for i, res in zip(idx, parsed):
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

"""Agent candidates for anchors, generated on every rank (whole batches each), gathered in order.

Shared by the collect and generate stages. Seeds depend on (seed, phase, anchor, index) only, so
every method sees the same dice: differences come from the weights.
"""
from __future__ import annotations

from moloch_exp.records import Anchor, Candidate
from moloch_exp.seeding import derive_seed


def candidates(env, task, generator, anchors: list[Anchor], k: int, phase: str, adapter_dir: str | None,
               desc: str) -> list[Candidate]:
    jobs = [(a, i) for a in anchors for i in range(k)]
    prompts = [task.agent_messages(a) for a, _ in jobs]
    seeds = [derive_seed(env.seed, phase, a.id, i) for a, i in jobs]
    mine = env.dist.shard_batches(len(prompts), generator.batch_size)
    texts = generator.generate([prompts[i] for i in mine], [seeds[i] for i in mine],
                               adapter_dir=adapter_dir, desc=desc) if mine else []
    texts = env.dist.gather_indexed(list(zip(mine, texts)))
    out = []
    for (a, i), prompt, seed, text in zip(jobs, prompts, seeds, texts):
        ex = task.extract(text)
        out.append(Candidate(a.id, i, prompt, text, ex.thought, ex.message, ex.status, seed))
    return out

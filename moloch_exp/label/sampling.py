"""The blinded, stratified sample: per probe, equal shares of each (method, judge verdict) stratum.

    python -m moloch_exp.label sample RUN_DIR --per-probe 40 --seed 0

    from moloch_exp.label.sampling import allocate, draw
    sample = draw(judged, ctx, labels_dir, per_probe=40, seed=0)

Equal allocation over strata (what a small stratum cannot fill goes to the others) over-samples
the rare verdict, so the judge's "yes" answers are checked as often as its "no" answers; the
report weights every stratum by its share of the cell (moloch_exp/label/stats.py), so the
estimates stand for the whole cell, not for the sample. The draw is seeded; the order labellers
see is shuffled, and item ids are salted hashes, so neither reveals a method or a verdict.
"""
from __future__ import annotations

import hashlib
import random
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Hashable, TypeVar

from moloch_exp.label.items import Design, Item, LabelSample
from moloch_exp.label.sources import Judged, SourceContext

K = TypeVar("K", bound=Hashable)


def allocate(sizes: dict[K, int], total: int, rng: random.Random) -> dict[K, int]:
    """Sample sizes per stratum: equal shares of ``total``, each capped at the stratum's size; the
    remainder goes one at a time to strata in a seeded order."""
    alloc = {k: 0 for k in sizes}
    left = min(total, sum(sizes.values()))
    while left > 0:
        open_ = [k for k in sorted(sizes, key=str) if alloc[k] < sizes[k]]
        share = left // len(open_)
        if share == 0:  # fewer left than open strata: a seeded choice gets one each
            for k in rng.sample(open_, left):
                alloc[k] += 1
            break
        for k in open_:
            take = min(share, sizes[k] - alloc[k])
            alloc[k] += take
            left -= take
    return alloc


def item_id(salt: str, probe: str, key: str) -> str:
    return hashlib.sha256(f"{salt}\x1f{probe}\x1f{key}".encode()).hexdigest()[:12]


def draw(judged: list[Judged], ctx: SourceContext, out_dir: Path, per_probe: int = 40, seed: int = 0) -> LabelSample:
    if per_probe < 1:
        raise ValueError(f"--per-probe must be at least 1, not {per_probe}")
    rng = random.Random(seed)
    salt = secrets.token_hex(16)
    strata: dict[tuple[str, str, bool], list[Judged]] = defaultdict(list)
    population: dict[str, dict[str, dict[str, int]]] = {}
    for j in judged:
        strata[(j.probe, j.method, j.verdict)].append(j)
        counts = population.setdefault(j.probe, {}).setdefault(j.method, {"n": 0, "judge_yes": 0})
        counts["n"] += 1
        counts["judge_yes"] += j.verdict
    chosen: list[Judged] = []
    design_strata = []
    for probe in population:
        sizes = {k: len(v) for k, v in strata.items() if k[0] == probe}
        for k, n in sorted(allocate(sizes, per_probe, rng).items(), key=lambda kv: str(kv[0])):
            members = sorted(strata[k], key=lambda j: j.key)
            chosen += rng.sample(members, n)
            design_strata.append({"probe": probe, "method": k[1], "verdict": k[2], "population": len(members),
                                  "sampled": n})
    rng.shuffle(chosen)
    items = [Item(item_id(salt, j.probe, j.key), i, j.probe, j.question, j.anchor_heading, j.anchor_text,
                  j.output_heading, j.output, j.method, j.model, j.verdict, j.reasoning, j.key)
             for i, j in enumerate(chosen)]
    design = Design(ctx.source, ctx.inputs, seed, per_probe, salt, ctx.baseline, ctx.compared, ctx.questions,
                    population, design_strata)
    return LabelSample(Path(out_dir), design, items)

"""Copy an LLM response cache from one store to another (keys are the same in every store):

    python -m moloch_exp.llm.cache_copy --from sqlite:.cache/moloch_exp/llm_cache.sqlite --to files:/shared/responses
    python -m moloch_exp.llm.cache_copy --from files:/shared/responses --to redis://cachehost:6379/0
    python -m moloch_exp.llm.cache_copy --from redis://cachehost:6379/0?namespace=moloch_exp --to sqlite:/tmp/c.sqlite

A key already in the destination keeps the destination's answer (put-if-absent, as in a run); the
line printed at the end counts records copied, already present, and present with another answer.
Copying again after a partial copy (a killed command) copies only what is missing.
"""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from moloch_exp.errors import UserError
from moloch_exp.llm.stores import open_store
from moloch_exp.llm.stores.codec import canonical_json


def copy_cache(source, destination, progress: bool = True) -> dict:
    """Copy every record of ``source`` into ``destination``; returns the counts."""
    counts = {"read": 0, "copied": 0, "present": 0, "present_different": 0}
    for key, value in tqdm(source.iterate(), total=len(source), desc="copy responses", unit="rec",
                           disable=not progress, mininterval=1.0):
        counts["read"] += 1
        if destination.put(key, value):
            counts["copied"] += 1
            continue
        counts["present"] += 1
        kept = destination.get(key)
        if kept is None or canonical_json(kept) != canonical_json(value):
            counts["present_different"] += 1
    counts["destination_total"] = len(destination)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moloch_exp.llm.cache_copy", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="sqlite:PATH | files:DIR | redis://HOST:PORT/DB")
    parser.add_argument("--to", dest="destination", required=True, help="the same forms")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        source, destination = open_store(args.source, must_exist=True), open_store(args.destination)
        for store in (source, destination):
            store.check()  # a server store answers before any copying
        counts = copy_cache(source, destination, progress=not args.quiet)
    except UserError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(f"{source.describe()} -> {destination.describe()}: {counts['read']} records read, {counts['copied']} copied, "
          f"{counts['present']} already present ({counts['present_different']} with another answer, kept); "
          f"the destination holds {counts['destination_total']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

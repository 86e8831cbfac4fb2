"""One of the processes of tests/llm/test_response_stores.py: reads and writes overlapping keys through a store.

    python tests/llm/store_worker.py SPEC WORKER N_KEYS GO_FILE REPORT_FILE

Goes through all N_KEYS keys in its own random order: a miss computes an answer that names this
worker, stores it (put-if-absent) and reads it back; a hit checks the answer's digest. Writes what it
won, the puts it lost and which writer's answer it saw for every key as JSON to REPORT_FILE.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from pathlib import Path

from moloch_exp.llm.stores import open_store

TEXT = "The audience member weighs both pitches and prefers the one that names a concrete price. " * 7


def key_of(i: int) -> str:
    return hashlib.sha256(f"request-{i}".encode()).hexdigest()


def answer(i: int, worker: int) -> dict:
    """About 700 bytes, the size of a vote with its thought; the digest covers every other field."""
    value = {"i": i, "writer": worker, "text": f"{TEXT}[{i}]", "prompt_tokens": 400 + i % 97,
             "completion_tokens": 60 + i % 13, "finish_reason": "stop"}
    value["digest"] = digest(value)
    return value


def digest(value: dict) -> str:
    body = {k: v for k, v in value.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def main() -> None:
    spec, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    go, report = Path(sys.argv[4]), Path(sys.argv[5])
    store = open_store(spec)
    order = random.Random(worker).sample(range(n), n)
    while not go.exists():  # every worker starts at once
        time.sleep(0.01)
    won, lost, seen, errors = [], 0, [None] * n, []
    for i in order:
        key = key_of(i)
        value = store.get(key)
        if value is None:
            if store.put(key, answer(i, worker)):
                won.append(i)
            else:  # another worker stored its answer between our miss and our put
                lost += 1
            value = store.get(key)
            if value is None:
                errors.append(f"key {i}: missing right after put")
                continue
        if value.get("i") != i or value.get("digest") != digest(value):
            errors.append(f"key {i}: corrupted answer {str(value)[:80]}")
        seen[i] = value.get("writer")
    store.close()
    report.write_text(json.dumps({"won": won, "lost": lost, "seen": seen, "errors": errors[:20]}))


if __name__ == "__main__":
    main()

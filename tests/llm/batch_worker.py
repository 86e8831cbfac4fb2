"""A run of parse_many through the Batch API in its own process, for the kill -9 test:
``python batch_worker.py BASE_URL CACHE OUT N`` writes one JSON line per result to OUT and the ledger."""

from __future__ import annotations

import json
import sys

from llm_test_helpers import VOTE_SCHEMA, vote_request

from moloch_exp.llm import LLMClient, json_parser
from moloch_exp.llm.batch import BatchSettings

if __name__ == "__main__":
    base_url, cache, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = LLMClient(base_url, "gpt-4o-mini", cache=cache, progress=False,
                       batch=BatchSettings(poll_interval_s=0.1))
    parsed = client.parse_many([vote_request(i, max_tokens=64) for i in range(n)], json_parser(VOTE_SCHEMA),
                               desc="votes", invalid_retries=1)
    with open(out, "w") as fh:
        for p in parsed:
            fh.write(json.dumps({"status": p.status, "value": p.value, "raw": p.raw, "attempts": p.attempts}) + "\n")
        fh.write(json.dumps({"ledger": client.ledger.to_dict()}) + "\n")

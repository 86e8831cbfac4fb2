"""Subprocess for the kill -9 test: N cached calls, one at a time, through a given base_url.

usage: python resume_worker.py BASE_URL CACHE_PATH N
"""

import sys

from llm_test_helpers import small_request

from moloch_exp.llm import LLMClient, ResponseCache

if __name__ == "__main__":
    base_url, cache_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = LLMClient(base_url, "smollm2", concurrency=1, cache=ResponseCache(cache_path), progress=False)
    client.chat_many([small_request(i, max_tokens=8) for i in range(n)], desc="worker")
    print("finished", flush=True)

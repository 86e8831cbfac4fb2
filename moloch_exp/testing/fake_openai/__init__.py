"""A loopback fake of a hosted OpenAI API (chat completions, rate limits, Files and Batch API), for tests
and benches: the stand-in for api.openai.com, which cannot be reached here. Never imported by the library.

In a test::

    from moloch_exp.testing.fake_openai import FakeOpenAI
    with FakeOpenAI(latency_s=0.3, jitter_s=0.05, fault_429_share=0.02) as api:   # a thread of this process
        ...  LLMClient(api.base_url, "gpt-4o-mini") ...
        api.stats(digests=True)["answered_by_digest"]   # and answer_hash_by_digest: which texts went out

As its own process (prints its URL; ``--port-file`` gets the port once it listens)::

    python -m moloch_exp.testing.fake_openai --port 8011 --latency-s 0.3 --fault-429-share 0.02
    python -m moloch_exp.testing.fake_openai --port 0 --port-file /tmp/fake.port --enforce --rpm 600 --burst-s 6
    curl -s http://127.0.0.1:8011/_stats

Options: :class:`FakeOptions` (every field is a ``--flag`` and a key of ``POST /_config``).
Modules: ``answers`` (what the model says, tokens, logprobs), ``ratelimit`` (buckets and
``x-ratelimit-*`` headers), ``chat`` (``/v1/chat/completions``), ``batches`` (``/v1/files``,
``/v1/batches``), ``state`` (options, counters, prefix cache), ``app`` (routes), ``server`` (running it).
"""

from .answers import body_digest
from .server import FakeOpenAI, FakeOpenAIProcess, fetch_stats
from .state import FakeOptions, answer_hash

__all__ = ["FakeOpenAI", "FakeOpenAIProcess", "FakeOptions", "answer_hash", "body_digest", "fetch_stats"]

"""The fake's options, its counters (read over ``GET /_stats``) and its prompt-prefix cache."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeOptions:
    """Everything the fake can be told (constructor keywords, ``--flags`` of the process, ``POST /_config``)."""

    # answers
    latency_s: float = 0.3            # mean time to answer a chat request
    jitter_s: float = 0.05            # uniform +- around it
    per_token_latency_s: float = 0.0  # added per completion token
    models: list[str] = field(default_factory=lambda: ["gpt-4o-mini", "gpt-4o"])  # GET /v1/models
    any_model: bool = True            # False: a model not in ``models`` is a 404
    api_key: str | None = None        # set: requests without "Authorization: Bearer <it>" get 401
    invalid_share: float = 0.0        # share of schema answers cut mid-JSON (finish_reason "length")
    # faults and limits
    fault_429_share: float = 0.0      # share of attempts refused with 429 whatever the buckets say
    fault_retry_after_s: float = 1.0  # their Retry-After
    rpm: float = 30_000               # requests per minute per model (gpt-4o-mini at OpenAI's tier 5)
    tpm: float = 150_000_000          # tokens per minute per model
    burst_s: float = 60.0             # bucket size in seconds of refill (60: a whole minute)
    enforce: bool = False             # True: 429 when a bucket is empty; False: headers only
    outage_retry_after_s: float | None = None  # Retry-After during an outage (None: the outage's rest)
    # prompt caching (OpenAI: prompts of 1024+ tokens, in steps of 128)
    cache_min_tokens: int = 1024
    cache_block_tokens: int = 128
    # Batch API
    batch_validating_s: float = 0.2
    batch_line_s: float = 0.0002      # processing time per line while in_progress
    batch_finalizing_s: float = 0.2
    batch_fail_share: float = 0.0     # share of lines answered with an error (per line and try)
    batch_fail_status: int = 500      # their status code (500: worth resubmitting; 400: not)
    batch_expire_after: float | None = None  # a share in [0, 1): the batch expires after that share of lines
    max_file_requests: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    storage_dir: str | None = None    # where files live (default: a temporary directory)

    def update(self, **changes: Any) -> "FakeOptions":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names - {"outage_s"})
        if unknown:
            raise ValueError(f"unknown fake option(s) {unknown}; known: {sorted(names)}")
        for k, v in changes.items():
            if k != "outage_s":
                setattr(self, k, v)
        return self


class PrefixCache:
    """Prompt prefixes seen before, in blocks of ``block_tokens`` (~4 characters a token)."""

    def __init__(self, max_blocks: int = 4_000_000) -> None:
        self._seen: set[bytes] = set()
        self._max = max_blocks
        self._lock = threading.Lock()

    def cached_tokens(self, text: str, n_tokens: int, min_tokens: int, block_tokens: int) -> int:
        block_chars = 4 * block_tokens
        h = hashlib.blake2b(digest_size=16)
        hashes = []
        for start in range(0, len(text) - block_chars + 1, block_chars):
            h.update(text[start: start + block_chars].encode("utf-8"))
            hashes.append(h.copy().digest())
        with self._lock:
            hit = 0
            for d in hashes:
                if d not in self._seen:
                    break
                hit += 1
            if len(self._seen) > self._max:
                self._seen.clear()
            self._seen.update(hashes)
        if n_tokens < min_tokens:
            return 0
        return min(hit * block_tokens, n_tokens)


def answer_hash(text: str | None) -> str:
    """A short fingerprint of an answer's text (what ``answer_hash_by_digest`` holds)."""
    return hashlib.blake2b((text or "").encode("utf-8"), digest_size=8).hexdigest()


class Stats:
    """Counts at the server. ``answered_by_digest``: chat answers delivered (the client was still there);
    ``abandoned_by_digest``: answered after the client had gone (a killed run); ``batch_lines_by_digest``:
    batch lines computed; ``answer_hash_by_digest``: :func:`answer_hash` of each delivered answer's text,
    so a test can tell which of them a killed client had stored (its response cache keeps the texts)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.t0 = time.monotonic()
        self.requests = 0                 # POST /v1/chat/completions, every attempt
        self.status: Counter = Counter()  # answers by HTTP status
        self.rate_limited = 0             # 429s from an empty bucket or an outage
        self.fault_429 = 0                # 429s from fault_429_share
        self.attempts_by_digest: Counter = Counter()
        self.answered_by_digest: Counter = Counter()
        self.abandoned_by_digest: Counter = Counter()
        self.answer_hash_by_digest: dict[str, str] = {}
        self.batch_lines_by_digest: Counter = Counter()
        self.batch_tries_by_digest: Counter = Counter()
        self.tokens = Counter()           # prompt, completion, cached, charged
        self.timeline: list[tuple[float, int]] = []  # (seconds since reset, status) per chat attempt
        self.files_uploaded = 0
        self.batches_created = 0
        self.batches_by_status: Counter = Counter()

    def event(self, status: int) -> None:
        with self.lock:
            self.status[status] += 1
            if len(self.timeline) < 2_000_000:
                self.timeline.append((round(time.monotonic() - self.t0, 4), status))

    def summary(self, digests: bool = False, timeline: bool = False) -> dict:
        with self.lock:
            out: dict[str, Any] = {
                "t0_monotonic": self.t0,  # CLOCK_MONOTONIC: comparable with time.monotonic() of other processes
                "seconds": time.monotonic() - self.t0,
                "requests": self.requests,
                "status": {str(k): v for k, v in sorted(self.status.items())},
                "answered": sum(self.answered_by_digest.values()),
                "abandoned": sum(self.abandoned_by_digest.values()),
                "unique_answered": len(self.answered_by_digest),
                "repeated_answers": sum(v - 1 for v in self.answered_by_digest.values() if v > 1),
                "rate_limited": self.rate_limited,
                "fault_429": self.fault_429,
                "tokens": dict(self.tokens),
                "files_uploaded": self.files_uploaded,
                "batches_created": self.batches_created,
                "batches_by_status": dict(self.batches_by_status),
                "batch_lines": sum(self.batch_lines_by_digest.values()),
                "unique_batch_lines": len(self.batch_lines_by_digest),
            }
            if digests:
                out["answered_by_digest"] = dict(self.answered_by_digest)
                out["abandoned_by_digest"] = dict(self.abandoned_by_digest)
                out["answer_hash_by_digest"] = dict(self.answer_hash_by_digest)
                out["attempts_by_digest"] = dict(self.attempts_by_digest)
                out["batch_lines_by_digest"] = dict(self.batch_lines_by_digest)
            if timeline:
                out["timeline"] = list(self.timeline)
        return out

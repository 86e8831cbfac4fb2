"""Batch API files: request lines in, output and error lines out (OpenAI's JSONL, which ``vllm run-batch`` reads too).

A request line is ``{"custom_id": <cache key>, "method": "POST", "url": "/v1/chat/completions", "body": {...}}``
with the body a synchronous call would send, so an answer lands in the response cache under the very
key a synchronous call would have used. Files are split at the API's limits (50,000 requests, 200 MB).

Offline, for an open-weight audience: run a file written under ``<cache_dir>/batches/`` through vLLM
and load the answers into the cache (the next run then makes no calls for them)::

    vllm run-batch -i .cache/moloch_exp/batches/<digest>.jsonl -o answers.jsonl --model <served model>
    python -m moloch_exp.llm.batch_files answers.jsonl --cache .cache/moloch_exp/llm_cache.sqlite
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .completion import MalformedCompletion, record_from_completion

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS_PER_FILE = 50_000       # OpenAI: a batch input file holds at most 50,000 requests
MAX_BYTES_PER_FILE = 200 * 1000 * 1000  # and at most 200 MB
# Line errors worth sending again: the window passed, the batch was cancelled, the provider failed.
RETRYABLE_CODES = {"batch_expired", "batch_cancelled", "server_error", "rate_limit_exceeded", "timeout"}


def request_line(custom_id: str, body: dict) -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def split_lines(lines: list[tuple[str, bytes]], max_requests: int = MAX_REQUESTS_PER_FILE,
                max_bytes: int = MAX_BYTES_PER_FILE) -> list[list[tuple[str, bytes]]]:
    """Consecutive chunks of ``(custom_id, line)`` within both limits; one line over ``max_bytes`` is an error."""
    if max_requests < 1 or max_bytes < 1:
        raise ValueError("max_requests and max_bytes must be >= 1")
    chunks: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for cid, line in lines:
        if len(line) > max_bytes:
            raise ValueError(f"request {cid} alone is {len(line)} bytes, over the {max_bytes}-byte file limit")
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append((cid, line))
        size += len(line)
    if current:
        chunks.append(current)
    return chunks


@dataclass
class LineOutcome:
    """One output/error line: a cache record, or an error and whether sending it again may help."""

    custom_id: str
    record: dict | None = None
    error: str | None = None
    retryable: bool = False


def read_output(data: bytes | str) -> list[LineOutcome]:
    """Parse an output or error file (OpenAI's or ``vllm run-batch``'s)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        obj = json.loads(raw)
        cid = str(obj.get("custom_id"))
        resp, err = obj.get("response"), obj.get("error")
        if resp and int(resp.get("status_code") or 0) == 200:
            try:
                out.append(LineOutcome(cid, record=record_from_completion(resp.get("body") or {})))
            except MalformedCompletion as e:
                out.append(LineOutcome(cid, error=f"malformed answer in batch output line {n}: {e}", retryable=True))
        elif resp:
            status = int(resp.get("status_code") or 0)
            body = resp.get("body") or {}
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            out.append(LineOutcome(cid, error=f"HTTP {status}: {message or body}",
                                   retryable=status in (408, 409, 429) or status >= 500))
        else:
            err = err or {}
            code = str(err.get("code") or "unknown")
            out.append(LineOutcome(cid, error=f"{code}: {err.get('message') or 'no message'}",
                                   retryable=code in RETRYABLE_CODES))
    return out


def import_output(paths: Iterable[str | Path], cache) -> tuple[int, int]:
    """Store every answered line of ``paths`` in ``cache`` under its custom_id; ``(stored, not answered)``."""
    stored = failed = 0
    for path in paths:
        for line in read_output(Path(path).read_bytes()):
            if line.record is None:
                failed += 1
                continue
            rec = dict(line.record)
            if rec.get("completion_tokens") is None:
                rec["completion_tokens"] = -(-len(rec.get("text") or "") // 4)
            cache.put(line.custom_id, rec)
            stored += 1
    return stored, failed


def main(argv: list[str] | None = None) -> None:
    from .cache import ResponseCache

    p = argparse.ArgumentParser(prog="python -m moloch_exp.llm.batch_files",
                                description="Load batch output files (OpenAI or vllm run-batch) into the response cache.")
    p.add_argument("outputs", nargs="+", help="output JSONL files")
    p.add_argument("--cache", required=True, help="the response cache, e.g. .cache/moloch_exp/llm_cache.sqlite")
    args = p.parse_args(argv)
    stored, failed = import_output(args.outputs, ResponseCache(args.cache))
    print(f"stored {stored} answers in {args.cache}; {failed} lines had no answer")


if __name__ == "__main__":
    main()

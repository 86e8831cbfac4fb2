"""The OpenAI Batch API behind ``chat_many``/``parse_many`` (``<service>.batch=true``): half the price,
no per-minute limits, answers within the 24 h window.

For one call of ``chat_many``/``parse_many`` (a stage's requests):

1. answers already in the response cache are used as they are;
2. batches an earlier run left pending for any of the missing requests are polled to the end and
   collected (a killed run resumes its batches: nothing is sent or billed twice);
3. the rest become request lines (:mod:`.batch_files`; ``custom_id`` = the cache key), split at the
   file limits, written under ``<cache_dir>/batches/``, uploaded (``POST /v1/files``), and made into
   batches (``POST /v1/batches``); every id is written to the journal (:mod:`.batch_journal`) as
   soon as it exists;
4. the batches are polled every ``poll_interval_s`` with one progress bar; each answered line is
   stored in the cache under its key, in the record a synchronous call would have stored, and booked
   in the ledger (``batch=True``); a later synchronous run makes no call for it;
5. lines that expired, were cancelled or failed with a retryable error (429, 5xx) are sent again in
   a batch of their own, at most ``max_resubmits`` times; what still has no answer comes back as a
   failed result (``ok=False`` with the cause), which the stage counts against its
   ``max_failed_fraction``.

``parse_many`` re-asks unparseable answers (``seed + k``, as the synchronous path) in further rounds
of the same procedure.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import openai
from tqdm.auto import tqdm

from moloch_exp.errors import ServiceError

from .batch_files import ENDPOINT, MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE, read_output, request_line, split_lines
from .batch_journal import TERMINAL, BatchJournal, JournalEntry
from .ledger import BudgetExceeded
from .metering import result_from_record
from .reasking import PARSE_ERRORS, reask, unparseable
from .types import PARSED_FAILED, PARSED_INVALID, PARSED_OK, ChatRequest, ChatResult, Parsed

if TYPE_CHECKING:
    from .client import LLMClient

log = logging.getLogger(__name__)


class BatchStillPending(ServiceError):
    """Batches were still running after ``max_wait_s``; a re-run resumes them."""


class BatchAPIError(ServiceError):
    """A Files/Batches request failed past the SDK's retries (unreachable, refused, rejected key)."""


@dataclass
class BatchSettings:
    """``<service>.batch_settings`` (conf/audience/*.yaml, conf/judge/*.yaml)."""

    poll_interval_s: float = 30.0
    max_requests_per_file: int = MAX_REQUESTS_PER_FILE
    max_bytes_per_file: int = MAX_BYTES_PER_FILE
    completion_window: str = "24h"
    max_resubmits: int = 2            # times an expired/failed line is sent again in a batch of its own
    max_wait_s: float | None = None   # stop polling after this long (BatchStillPending); None: until done
    keep_jsonl: bool = False          # keep the request files after collection (for `vllm run-batch`)
    journal_dir: str | None = None    # None: `batches/` beside the response cache (sqlite and files stores)

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError(f"batch poll_interval_s must be > 0, got {self.poll_interval_s}")
        if self.max_resubmits < 0:
            raise ValueError(f"batch max_resubmits must be >= 0, got {self.max_resubmits}")


def journal_root(settings: BatchSettings, store_spec: str) -> Path:
    """Where the batch journal lives: ``settings.journal_dir``, else ``batches/`` beside the response cache
    (``sqlite:PATH`` or ``files:DIR``, from the store's ``describe()``). A store without a local path
    (Redis) needs ``journal_dir``: the journal must outlive the run that wrote it."""
    if settings.journal_dir:
        return Path(settings.journal_dir).expanduser()
    kind, _, where = store_spec.partition(":")
    if kind in ("sqlite", "files") and where:
        return Path(where).expanduser().parent / "batches"
    raise BatchAPIError(f"batch mode keeps a journal of its batches on disk, and the response cache "
                        f"{store_spec} has no local directory: set <service>.batch_settings.journal_dir")


class BatchRunner:
    def __init__(self, client: "LLMClient") -> None:
        self.client = client
        self.settings: BatchSettings = client.batch
        self.journal = BatchJournal(journal_root(self.settings, client.cache.store.describe()))
        self.api = openai.OpenAI(base_url=client.base_url, api_key=client.api_key.read(),
                                 timeout=max(client.timeout_s, 600.0), max_retries=client.max_retries)
        self.model = client.model_identity
        self._reserved: dict[str, float] = {}  # budget this run reserved per journal entry

    def close(self) -> None:
        self.api.close()

    @contextlib.contextmanager
    def _call(self, what: str):
        """One line naming the endpoint and the step for an API error; the journal keeps what exists."""
        try:
            yield
        except openai.APIError as err:
            status = getattr(err, "status_code", None)
            raise BatchAPIError(
                f"Batch API at {self.client.base_url}: {what} failed ({f'HTTP {status}: ' if status else ''}"
                f"{self.client.api_key.scrub(' '.join(str(err).split()))[:300]}); what was submitted is in "
                f"{self.journal.root} and a re-run resumes it") from None

    # -- submitting ----------------------------------------------------------------
    def _estimate_usd(self, req: ChatRequest) -> float:
        return self.client.meter.estimate(req).usd

    def _submit(self, keys: list[str], reqs: dict[str, ChatRequest], round_: int) -> list[JournalEntry]:
        s = self.settings
        lines = [(k, request_line(k, self.client.request_body(reqs[k]))) for k in keys]
        entries = []
        for chunk in split_lines(lines, s.max_requests_per_file, s.max_bytes_per_file):
            chunk_keys = [k for k, _ in chunk]
            est = sum(self._estimate_usd(reqs[k]) for k in chunk_keys)
            if self.client.budget is not None:
                self.client.budget.reserve(est)  # BudgetExceeded before anything is uploaded
            entry = self.journal.open(self.model, chunk_keys, round_, b"".join(line for _, line in chunk))
            self._reserved[entry.digest] = self._reserved.get(entry.digest, 0.0) + est
            self._start(entry)
            entries.append(entry)
        return entries

    def _start(self, entry: JournalEntry) -> None:
        """Upload and create what ``entry`` lacks; every id is in the journal before the next step."""
        if entry.batch_id is not None:
            return
        if entry.file_id is None:
            with open(self.journal.jsonl_path(entry.digest), "rb") as fh, self._call("uploading a request file"):
                f = self.api.files.create(file=(f"{entry.digest}.jsonl", fh), purpose="batch")
            self.journal.update(entry, file_id=f.id, status="uploaded")
        if entry.status == "creating":  # killed between asking for the batch and writing its id down
            with self._call("listing batches"):
                found = self._find_batch(entry.file_id, since=entry.updated - 3600)
            if found is not None:
                self.journal.update(entry, batch_id=found.id, status=found.status)
                return
        self.journal.update(entry, status="creating")
        with self._call(f"creating a batch from {entry.file_id}"):
            b = self.api.batches.create(input_file_id=entry.file_id, endpoint=ENDPOINT,
                                        completion_window=self.settings.completion_window,
                                        metadata={"moloch_exp_journal": entry.digest})
        self.journal.update(entry, batch_id=b.id, status=b.status)
        log.info("batch %s: %d requests (file %s, journal %s)", b.id, entry.n, entry.file_id, entry.digest[:12])

    def _find_batch(self, file_id: str | None, since: float) -> Any:
        for b in self.api.batches.list(limit=100):  # newest first; the SDK fetches the next pages
            if b.input_file_id == file_id:
                return b
            if b.created_at < since:
                break
        return None

    # -- polling and collecting ----------------------------------------------------
    def _finish(self, entries: list[JournalEntry], desc: str) -> dict[str, tuple[str, bool]]:
        """Poll ``entries`` to the end and collect them; returns ``{key: (error, retryable)}`` for lines
        without an answer."""
        failures: dict[str, tuple[str, bool]] = {}
        if not entries:
            return failures
        for e in entries:
            self._start(e)
        bar = tqdm(total=sum(e.n for e in entries), desc=f"{desc} (batch)", unit="req", dynamic_ncols=True,
                   disable=not self.client.progress)
        progress = {e.digest: 0 for e in entries}
        pending = list(entries)
        t0 = time.monotonic()
        try:
            while pending:
                for e in list(pending):
                    with self._call(f"polling batch {e.batch_id}"):
                        b = self.api.batches.retrieve(e.batch_id)
                    counts = b.request_counts
                    done = (counts.completed + counts.failed) if counts is not None else 0
                    bar.update(max(0, done - progress[e.digest]))
                    progress[e.digest] = max(done, progress[e.digest])
                    if b.status != e.status:
                        self.journal.update(e, status=b.status)
                    if b.status in TERMINAL:
                        failures.update(self._collect(e, b))
                        bar.update(e.n - progress[e.digest])
                        progress[e.digest] = e.n
                        pending.remove(e)
                bar.set_postfix(pending=len(pending), refresh=False)
                if not pending:
                    break
                if self.settings.max_wait_s is not None and time.monotonic() - t0 > self.settings.max_wait_s:
                    ids = ", ".join(str(e.batch_id) for e in pending)
                    raise BatchStillPending(
                        f"'{desc}': batch(es) {ids} still running after {self.settings.max_wait_s:g} s "
                        f"(journal {self.journal.root}); re-run to resume polling them (nothing is resubmitted)")
                time.sleep(self.settings.poll_interval_s)
        finally:
            bar.close()
        return failures

    def _collect(self, entry: JournalEntry, batch: Any) -> dict[str, tuple[str, bool]]:
        client, cache, ledger = self.client, self.client.cache, self.client.ledger
        failures: dict[str, tuple[str, bool]] = {}
        answered: set[str] = set()
        actual_usd = 0.0
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            with self._call(f"downloading {file_id} of batch {batch.id}"):
                data = self.api.files.content(file_id).read()
            for line in read_output(data):
                if line.record is None:
                    failures[line.custom_id] = (client.api_key.scrub(line.error or "no answer"), line.retryable)
                    continue
                rec = line.record
                if rec["prompt_tokens"] is None:
                    rec["prompt_tokens"] = 0
                if rec["completion_tokens"] is None:
                    rec["completion_tokens"] = -(-len(rec["text"] or "") // 4)
                first = cache.get(line.custom_id) is None  # another process may have collected it already
                cache.put(line.custom_id, rec)
                if first:
                    actual_usd += ledger.record_call(client.model, rec["prompt_tokens"], rec["completion_tokens"],
                                                     cached_prompt_tokens=rec["cached_prompt_tokens"], batch=True)
                answered.add(line.custom_id)
                failures.pop(line.custom_id, None)
        if batch.status == "failed":
            errors = getattr(batch, "errors", None)
            data = getattr(errors, "data", None) or []
            why = "; ".join(f"{getattr(d, 'code', '')}: {getattr(d, 'message', '')}" for d in data[:3]) or "no detail"
            cause = f"batch {batch.id} failed validation ({why})"
        else:
            cause = f"batch {batch.id} ended '{batch.status}' without an answer"
        for key in entry.keys:
            if key not in answered and key not in failures:
                # a refused input file will be refused again: not retryable; a cut-short batch is
                failures[key] = (cause, batch.status != "failed")
        if client.budget is not None:
            client.budget.settle(self._reserved.pop(entry.digest, 0.0), actual_usd)
        self.journal.collected(entry, self.settings.keep_jsonl)
        return failures

    # -- one stage's requests ------------------------------------------------------------
    def fetch(self, reqs: Sequence[ChatRequest], desc: str) -> dict[str, ChatResult]:
        """``{cache key: ChatResult}`` for every request, through the cache and the Batch API."""
        client, cache = self.client, self.client.cache
        by_key: dict[str, ChatRequest] = {}
        for r in reqs:
            by_key.setdefault(client.key_for(r), r)
        results: dict[str, ChatResult] = {}
        for key in by_key:
            rec = cache.get(key)
            if rec is not None:
                client.ledger.record_cache_hit(client.model)
                results[key] = result_from_record(rec, cached=True, attempts=0)
        missing = [k for k in by_key if k not in results]
        if not missing:
            return results
        wanted = set(missing)
        resumed = [e for e in self.journal.pending(self.model) if wanted & set(e.keys)]
        if resumed:
            log.info("'%s': resuming %d batch(es) an earlier run left pending", desc, len(resumed))
        failures = self._finish(resumed, f"{desc} (resumed)")
        resumed_keys = [set(e.keys) for e in resumed]
        submissions = {k: sum(k in ks for ks in resumed_keys) for k in missing}
        max_submissions = 1 + self.settings.max_resubmits
        for round_ in range(max_submissions):
            todo = [k for k in missing if submissions[k] < max_submissions and cache.get(k) is None
                    and (k not in failures or failures[k][1])]  # never resend a line refused for good
            if not todo:
                break
            for k in todo:
                submissions[k] += 1
            label = desc if round_ == 0 and not resumed else f"{desc} (resubmitting {len(todo)})"
            failures.update(self._finish(self._submit(todo, by_key, round_), label))
        for key in missing:
            rec = cache.get(key)
            n = max(1, submissions.get(key, 1))
            if n > 1:
                client.ledger.record_retries(client.model, n - 1)
            if rec is not None:
                results[key] = result_from_record(rec, cached=False, attempts=n)
                continue
            error, _ = failures.get(key, ("no answer from the Batch API", True))
            client.ledger.record_failure(client.model)
            log.warning("LLM batch request %s failed: %s", by_key[key].purpose or "", error)
            results[key] = ChatResult(None, False, f"{error} (after {n} batch submission{'s' if n > 1 else ''})",
                                      False, 0, 0, n)
        return results


def batch_chat_many(client: "LLMClient", reqs: Sequence[ChatRequest], desc: str) -> list[ChatResult]:
    """:meth:`LLMClient.chat_many` through the Batch API; order preserved."""
    runner = BatchRunner(client)
    try:
        got = runner.fetch(reqs, desc)
    except BudgetExceeded as err:
        err.partial = [None] * len(reqs)  # type: ignore[attr-defined]
        raise
    finally:
        runner.close()
    return [got[client.key_for(r)] for r in reqs]


def batch_parse_many(client: "LLMClient", reqs: Sequence[ChatRequest], parse: Callable[[str], Any], desc: str,
                     invalid_retries: int) -> list[Parsed]:
    """:meth:`LLMClient.parse_many` through the Batch API: ask k = 0..invalid_retries (``seed + k``) in
    rounds, each round holding the requests whose every earlier answer was unparseable."""
    reqs = list(reqs)
    asked: list[list[ChatResult]] = [[] for _ in reqs]
    out: list[Parsed | None] = [None] * len(reqs)
    last_error: list[str | None] = [None] * len(reqs)
    open_ = list(range(len(reqs)))
    runner = BatchRunner(client)
    try:
        for k in range(int(invalid_retries) + 1):
            if not open_:
                break
            round_reqs = {i: reask(reqs[i], k) for i in open_}
            round_desc = desc if k == 0 else f"{desc} (re-ask {k} of {len(open_)} unparseable)"
            try:
                got = runner.fetch(list(round_reqs.values()), round_desc)
            except BudgetExceeded as err:
                err.partial = out  # type: ignore[attr-defined]
                raise
            still = []
            for i in open_:
                res = got[client.key_for(round_reqs[i])]
                asked[i].append(res)
                cached = all(x.cached for x in asked[i])
                if not res.ok:
                    out[i] = Parsed(None, PARSED_FAILED, res.text, res.error, len(asked[i]), cached, asked[i])
                    continue
                try:
                    value = parse(res.text if res.text is not None else "")
                except PARSE_ERRORS as e:
                    last_error[i] = unparseable(e)
                    still.append(i)
                    continue
                out[i] = Parsed(value, PARSED_OK, res.text, None, len(asked[i]), cached, asked[i])
            open_ = still
    finally:
        runner.close()
    for i in open_:
        client.ledger.record_invalid(client.model)
        out[i] = Parsed(None, PARSED_INVALID, asked[i][-1].text, last_error[i], len(asked[i]),
                        all(x.cached for x in asked[i]), asked[i])
    return out  # type: ignore[return-value]

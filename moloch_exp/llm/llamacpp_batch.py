"""Continuous batching for the managed llama.cpp server: concurrent chat completions decoded together.

    python -m moloch_exp.llm.llamacpp_serve --parallel 8 --model M.gguf ...   # up to 8 sequences per decode
    audience.service.server.n_parallel=8 audience.service.client.concurrency=8  # the same, from a run

Why: llama-cpp-python's server decodes one request at a time, and a vote's answer is ~35 tokens decoded
one by one. Every token step reads all of SmolLM2's weights (96 MB, Q4_1); sequences decoded in one batch
share that read. Measured on 2 cores: 10.8 ms per token for one sequence, 51 ms for a step of 8 sequences
(6.4 ms each), 32 ms for 4 (8.0 ms each).

What: :class:`BatchedCompletions` owns a second llama.cpp context over the server's model, with up to
``parallel`` sequences (one stream of the KV cache each, ``n_ctx`` cells apiece), and a scheduler thread.
Each step decodes the next token of every answering sequence in one batch, then each admitted prompt (or
its next chunk) in a batch of its own. A new request starts from the longest prompt prefix any sequence
holds: that sequence's cells are copied (``llama_memory_seq_cp``, then the tail cut), not recomputed, so the
voters of a shared-prefix ballot (``audience.layout=shared_prefix_first``) evaluate the ballot once and then
only their own persona. A request whose prefix is being evaluated in the same step waits one step for it.
Idle sequences keep their cells as that prefix cache.

The answers are the stock server's, token for token: each request samples with its own chain, built as
the stock server builds it (``Llama._init_sampler``, with this server's grammar pass), from its own seed,
and each sequence's logits are exactly those of the stock context whatever it is batched with
(``tests/llm/test_llamacpp_batch.py``), which holds only for the layout above. Measured on llama.cpp as
llama-cpp-python 0.3.36 vendors it: in one unified cache, two sequences with identical histories decoded
side by side got logits up to 1.5 apart (and with flash attention, logits that depended on which cells a
sequence got); and one batch that mixed a sequence's single token with two other sequences' prompts gave
the last of those prompts logits 0.46 off. Hence one stream per sequence, and prompts decoded on their own.
So a service's answers (and its cache identity) do not depend on ``n_parallel``. Requests the batch does not
serve (streams, logprobs, logit bias, mirostat, tools, min_tokens, another chat handler) go to the stock
endpoint unchanged.

Measured (``python bench/ballot_layout.py --parallel 8 --tasks sales,elections,social_media``, the paper's
20 demographic voters, 2 cores): shared-prefix ballots 1.52-1.79 votes/s on sales against 1.26 one at a
time, 1.16 against 1.10 on elections, 1.40 against 1.03 on social_media; persona-first ballots, bound by
prompt processing, gain less (sales 0.41 -> 0.48-0.49).
"""
from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """One completion request: its prompt tokens, limits and sampler; ``future`` gets the completion."""

    prompt: list[int]
    max_tokens: int
    stop: list[bytes]
    sampler: object  # llama_cpp._internals.LlamaSampler, built for this request
    model_name: str
    future: Future = field(default_factory=Future)
    shared: int = 0  # prompt tokens whose cells came from the cache
    multibyte_fix: int = 0  # Llama._create_completion's count of tokens owed to a split UTF-8 character


@dataclass
class Slot:
    """One sequence of the KV cache: ``tokens`` are the tokens whose cells it holds, position 0 on."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    request: Pending | None = None
    fed: int = 0                 # prompt tokens of ``request`` already in the cache
    next_token: int | None = None  # sampled, not yet decoded
    completion: list[int] = field(default_factory=list)
    last_used: float = 0.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def context_params(llama, parallel: int, n_batch: int = 512):
    """The server context's own settings (threads, attention, cache types), with ``parallel`` sequences of
    ``llama.n_ctx()`` cells each, every one in its own stream of the cache."""
    params = type(llama.context_params).from_buffer_copy(llama.context_params)
    params.n_ctx = llama.n_ctx() * parallel
    params.n_batch = params.n_ubatch = n_batch
    params.n_seq_max = parallel
    # One stream per sequence: a sequence's cells stay in position order and its attention reads only them,
    # so its logits are exactly those of the stock context, whatever else is in the batch. In one unified
    # cache (llama.cpp 0.3.36) two sequences with identical histories, decoded side by side, got logits up to
    # 1.5 apart without flash attention, and with it a sequence's logits depended on which cells it got.
    params.kv_unified = False
    return params


class BatchedCompletions:
    """``submit`` a request, get a ``Future`` of its text completion; one scheduler thread decodes them all."""

    def __init__(self, llama, parallel: int, n_batch: int = 512) -> None:
        import llama_cpp

        if parallel < 2:
            raise ValueError(f"parallel must be at least 2, not {parallel}")
        self.llama_cpp = llama_cpp
        self.llama = llama
        self.parallel = parallel
        self.n_ctx = llama.n_ctx()  # per sequence, as the stock server allows one request
        self.n_batch = n_batch
        params = context_params(llama, parallel, n_batch)
        self.ctx = llama_cpp.llama_init_from_model(llama._model.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {params.n_ctx} cells for {parallel} sequences")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.slots = [Slot(seq=i) for i in range(parallel)]
        self.queue: deque[Pending] = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.steps = 0
        self.decoded_tokens = 0
        self.shared_tokens = 0  # prompt tokens taken from another sequence's cells instead of evaluated
        self.thread = threading.Thread(target=self._run, name="batched-decode", daemon=True)
        self.thread.start()

    # -- requests ------------------------------------------------------------
    def sampler(self, seed: int | None, **settings):
        """The stock server's sampler chain for these settings, with this request's seed."""
        from llama_cpp import llama as llama_module

        if seed is None:
            seed = random.Random(self.llama._seed).randint(0, 2**32)  # as Llama._create_completion does
        owner = SimpleNamespace(_seed=seed, _n_vocab=self.llama._n_vocab, _model=self.llama._model,
                                last_n_tokens_size=self.llama.last_n_tokens_size, _input_ids=None)
        return llama_module.Llama._init_sampler(owner, **settings)

    def submit(self, request: Pending) -> Future:
        if len(request.prompt) >= self.n_ctx:
            raise ValueError(f"Requested tokens ({len(request.prompt)}) exceed context window of {self.n_ctx}")
        with self.cond:
            if self.closed:
                raise RuntimeError("batched decoding is closed")
            self.queue.append(request)
            self.cond.notify()
        return request.future

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join(timeout=30)
        error = RuntimeError("batched decoding closed")
        self._fail_active(error)
        for req in self.queue:
            if not req.future.done():
                req.sampler.close()
                req.future.set_exception(error)
        self.queue.clear()
        self.llama_cpp.llama_batch_free(self.batch)
        self.llama_cpp.llama_free(self.ctx)

    # -- the scheduler -------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.closed and not self.queue and not any(s.request for s in self.slots):
                        self.cond.wait()
                    if self.closed:
                        return
                try:
                    with self.cond:
                        self._admit()
                    self._step()
                except Exception as exc:  # fails the requests in progress (never a result); the loop goes on
                    log.exception("batched decoding failed")
                    self._fail_active(exc)
        except BaseException as exc:  # the loop itself died: nothing may wait for it
            log.exception("batched decoding stopped")
            with self.cond:
                self.closed = True
                queued, self.queue = list(self.queue), deque()
            self._fail_active(exc)
            for req in queued:
                req.sampler.close()
                req.future.set_exception(RuntimeError(f"batched decoding stopped: {exc!r}"))
            raise

    def _fail_active(self, exc: BaseException) -> None:
        for slot in self.slots:
            if slot.request is not None:
                self.llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
                slot.tokens = []
                self._finish(slot, error=exc)

    def _admit(self) -> None:
        """Move queued requests into free sequences, each starting from the longest prefix held anywhere."""
        admitted: list[list[int]] = []
        budget = self.n_batch - sum(1 for s in self.slots if s.request is not None)
        while self.queue and budget > 0:
            free = [s for s in self.slots if s.request is None]
            if not free:
                return
            req = self.queue[0]
            cap = len(req.prompt) - 1  # at least one prompt token is evaluated: it gives the first logits
            source, shared = None, 0
            for s in self.slots:
                n = min(common_prefix(s.tokens, req.prompt), cap)
                if n > shared:
                    source, shared = s, n
            # a prompt admitted in this step is not in the cache yet: one that shares more with it waits a step
            if any(min(common_prefix(p, req.prompt), cap) > shared for p in admitted):
                return
            self.queue.popleft()
            if source is not None and source.request is None:
                slot = source
            else:
                # an idle sequence; among them the least recently used, whose cells are least likely wanted
                slot = min(free, key=lambda s: s.last_used)
            rm = self.llama_cpp.llama_memory_seq_rm
            if slot is not source:
                rm(self.memory, slot.seq, -1, -1)
                slot.tokens = []
                if shared:  # across streams llama.cpp copies whole sequences only; the tail is cut below
                    self.llama_cpp.llama_memory_seq_cp(self.memory, source.seq, slot.seq, -1, -1)
                    slot.tokens = list(source.tokens)
            rm(self.memory, slot.seq, shared, -1)
            slot.tokens = slot.tokens[:shared]
            self.shared_tokens += shared
            slot.request, slot.fed, slot.next_token, slot.completion = req, shared, None, []
            req.shared = shared
            admitted.append(req.prompt)
            budget -= len(req.prompt) - shared

    def _step(self) -> None:
        """One decode of every answering sequence's next token, then each admitted prompt (or its next chunk)
        in a decode of its own: a batch that mixed one sequence's single token with two others' prompts gave
        the last prompt wrong logits (module docstring), while a batch of one token per sequence, or of one
        sequence's tokens, gives each sequence exactly the stock logits (tests/llm/test_llamacpp_batch.py)."""
        answering = [s for s in self.slots if s.request is not None and s.next_token is not None]
        if answering:
            self._decode([(s, [s.next_token], True) for s in answering])
        for slot in self.slots:
            req = slot.request
            if req is not None and slot.fed < len(req.prompt):
                take = min(len(req.prompt) - slot.fed, self.n_batch)
                chunk = req.prompt[slot.fed:slot.fed + take]
                slot.fed += take
                self._decode([(slot, chunk, slot.fed == len(req.prompt))])

    def _decode(self, parts: list[tuple[Slot, list[int], bool]]) -> None:
        """Decode ``parts`` (slot, its next tokens, whether to sample after the last) in one batch, then sample."""
        batch, n, rows = self.batch, 0, []
        for slot, tokens, sample in parts:
            for i, token in enumerate(tokens):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, len(slot.tokens), 1
                batch.seq_id[n][0] = slot.seq
                batch.logits[n] = sample and i == len(tokens) - 1
                slot.tokens.append(token)
                n += 1
            slot.next_token = None
            if sample:
                rows.append((slot, n - 1))
        batch.n_tokens = n
        rc = self.llama_cpp.llama_decode(self.ctx, batch)
        if rc != 0:  # these sequences' cells are not all there: drop them, fail their requests (never an answer)
            error = RuntimeError(f"llama_decode returned {rc} for a batch of {n} tokens")
            for slot, _, _ in parts:
                self.llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
                slot.tokens = []
                self._finish(slot, error=error)
            return
        self.steps += 1
        self.decoded_tokens += n
        for slot, row in rows:
            token = slot.request.sampler.sample(SimpleNamespace(ctx=self.ctx), row)
            self._after_sample(slot, token)

    def _after_sample(self, slot: Slot, token: int) -> None:
        """Llama._create_completion's end conditions, in its order: end of generation; then, unless the text
        ends inside a UTF-8 character (which skips both checks), a stop string, then max_tokens."""
        req = slot.request
        if self.llama_cpp.llama_vocab_is_eog(self.llama._model.vocab, token):
            self._finish(slot, "stop")
            return
        slot.completion.append(token)
        text = self.llama.detokenize(slot.completion, prev_tokens=req.prompt)
        for k, char in enumerate(text[-3:]):  # as the stock loop reads it, quirks included
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    req.multibyte_fix = num - k
        if req.multibyte_fix > 0:
            req.multibyte_fix -= 1
            slot.next_token = token
            return
        hits = [s for s in req.stop if s in text]
        if hits:
            self._finish(slot, "stop", text[: text.index(hits[0])])
        elif len(slot.completion) >= req.max_tokens:
            self._finish(slot, "length", text)
        else:
            slot.next_token = token

    def _finish(self, slot: Slot, finish_reason: str | None = None, text: bytes | None = None,
                error: Exception | None = None) -> None:
        req = slot.request
        slot.request, slot.next_token, slot.last_used = None, None, time.perf_counter()
        if slot.fed < len(req.prompt):  # cut off mid-prompt: its cells are incomplete
            self.llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
            slot.tokens = []
        req.sampler.close()
        if error is not None:
            req.future.set_exception(error)
            return
        if text is None:
            text = self.llama.detokenize(slot.completion, prev_tokens=req.prompt)
        # one line per request, as llama.cpp's timing lines for the stock path (bench/ballot_layout.py reads both)
        log.info("batched request: %d prompt tokens evaluated, %d from the cache, %d generated",
                 len(req.prompt) - req.shared, req.shared, len(slot.completion))
        req.future.set_result({
            "id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
            "model": req.model_name,
            "choices": [{"text": text.decode("utf-8", errors="ignore"), "index": 0, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": len(req.prompt), "completion_tokens": len(slot.completion),
                      "total_tokens": len(req.prompt) + len(slot.completion)},
        })


class BatchedLlama:
    """What the stock chat handler needs of a ``Llama`` (``tokenize``, ``verbose``, ``create_completion``),
    with the completion decoded by :class:`BatchedCompletions`."""

    def __init__(self, llama, batcher: BatchedCompletions) -> None:
        self.llama = llama
        self.batcher = batcher
        self.verbose = llama.verbose

    def tokenize(self, *args, **kwargs) -> list[int]:
        return self.llama.tokenize(*args, **kwargs)

    def create_completion(self, prompt: list[int], *, max_tokens=16, temperature=0.8, top_p=0.95, min_p=0.05,
                          typical_p=1.0, logprobs=None, stream=False, stop=None, seed=None,
                          frequency_penalty=0.0, presence_penalty=0.0, repeat_penalty=1.0, top_k=40,
                          tfs_z=1.0, mirostat_mode=0, mirostat_tau=5.0, mirostat_eta=0.1, model=None,
                          stopping_criteria=None, logits_processor=None, grammar=None, logit_bias=None):
        # the route sends only requests this supports; stopping_criteria is the chat template's
        # "stop on EOS", which the end-of-generation check already is
        if stream or logprobs is not None or logits_processor is not None or logit_bias is not None or mirostat_mode:
            raise ValueError("batched decoding serves plain completions only")
        n_ctx = self.batcher.n_ctx
        if not isinstance(prompt, list):
            raise ValueError("batched decoding takes the chat handler's prompt tokens")
        if max_tokens is None or max_tokens <= 0 or max_tokens + len(prompt) >= n_ctx:
            max_tokens = n_ctx - len(prompt)  # as Llama._create_completion limits it
        stop = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        sampler = self.batcher.sampler(
            seed, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p, temp=temperature,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            logits_processor=None, grammar=grammar)
        req = Pending(prompt=list(prompt), max_tokens=max_tokens, stop=[s.encode("utf-8") for s in stop],
                      sampler=sampler, model_name=model if model is not None else self.llama.model_path)
        try:
            return self.batcher.submit(req).result()
        except BaseException:
            if not req.future.done():
                sampler.close()
            raise

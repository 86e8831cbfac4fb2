"""Audience and judge services: which OpenAI-protocol endpoint to talk to, and opening it.

An ``LLMService`` is a plain description (instantiated from ``conf/audience/*.yaml`` and
``conf/judge/*.yaml``). ``ServiceHub.open`` turns it into a live ``LLMClient`` — starting a
managed llama.cpp / vLLM server on a loopback port when asked, once per distinct server, and
tearing every server down when the hub closes. A managed llama.cpp service may run ``server.replicas``
copies of its server, each with its own slots and threads; its client sends each request to the least
busy one (the local default: two single-thread replicas, one per core, so that no decoding thread waits
for another: README, "The local server"). ``ServiceHub.suspend`` stops the managed servers while the
agent trains (their memory is the trainer's); the next ``open`` starts them again. All clients share
one response cache, one ledger and one budget. A client of a managed server checks the server is alive before every attempt, so a
server that dies mid-run stops the run with one line (``ServerDied``) instead of a retry storm.
With ``batch=true`` (hosted APIs only) the client sends each stage's uncached requests through the
OpenAI Batch API (``moloch_exp.llm.batch``; ``batch_settings``: its ``BatchSettings``), into the same cache.
"""
from __future__ import annotations

from moloch_exp.errors import ConfigError, ServiceError

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from moloch_exp.llm import llama_server
from moloch_exp.llm.batch import BatchSettings
from moloch_exp.llm.client import LLMClient
from moloch_exp.llm.prices import unpriced_message
from moloch_exp.llm.server import ManagedServer, smollm2_gguf_path


class ServiceConfigError(ServiceError, ValueError):
    """An audience/judge service is misconfigured or cannot be reached."""


@dataclass
class LLMService:
    """Where an audience or judge model lives and how to call it."""

    model: str
    managed: str | None = None          # None (remote base_url) | "llamacpp" | "vllm"
    base_url: str | None = None
    api_key_env: str | None = None      # name of the environment variable holding the key
    structured_output: str = "json_schema"  # json_schema | llamacpp | none
    server: dict = field(default_factory=dict)  # managed server options (n_ctx, threads, parallel, ...)
    client: dict = field(default_factory=dict)  # LLMClient options (timeout_s, concurrency, rpm, ...)
    batch: bool = False                 # send each stage's uncached requests through the OpenAI Batch API
    batch_settings: dict = field(default_factory=dict)  # moloch_exp.llm.batch.BatchSettings fields

    def __post_init__(self) -> None:
        if self.managed not in (None, "llamacpp", "vllm"):
            raise ServiceConfigError(f"managed must be null, 'llamacpp' or 'vllm', not {self.managed!r}")
        if self.managed is None and not self.base_url:
            raise ServiceConfigError(f"service for model {self.model!r}: set base_url or managed")
        if self.batch and self.managed is not None:
            raise ServiceConfigError(f"service for model {self.model!r}: batch=true needs a hosted Batch API "
                                     f"(managed=null and a base_url), not a managed {self.managed} server")
        if self.replicas < 1:
            raise ServiceConfigError(f"service for model {self.model!r}: server.replicas must be at least 1, "
                                     f"not {self.server.get('replicas')!r}")
        try:
            llama_server.sampling_id(self.server.get("sampling"))
        except (TypeError, ValueError) as err:
            raise ServiceConfigError(f"service for model {self.model!r}: {err}") from None
        try:
            BatchSettings(**dict(self.batch_settings or {}))
        except (TypeError, ValueError) as err:
            raise ServiceConfigError(f"service for model {self.model!r}: batch_settings: {err}") from None

    def batch_options(self) -> BatchSettings | None:
        return BatchSettings(**dict(self.batch_settings or {})) if self.batch else None

    @property
    def model_path(self) -> str:
        if self.model == "smollm2":
            return str(smollm2_gguf_path())
        return self.model

    def server_key(self) -> tuple:
        return (self.managed, self.model, tuple(sorted((k, str(v)) for k, v in self.server.items())))

    @property
    def replicas(self) -> int:
        """How many copies of a managed server run side by side (``server.replicas``, default 1)."""
        n = self.server.get("replicas")
        return int(1 if n is None else n) if self.managed else 1  # 0 stays 0: __post_init__ refuses it

    def slots(self) -> int:
        """Requests a managed service decodes at once: its slots (``server.n_parallel``) times its
        replicas; 1 for a remote endpoint (whatever it does is its own)."""
        return int(self.server.get("n_parallel") or 1) * self.replicas if self.managed else 1

    def identity(self) -> str:
        """What names this model in caches, ledgers and prices (never a key or a port). A managed llama.cpp
        model is named by the server kind, its build (``llama_server.build_id``: source commit and binary digest),
        the sampling it applies to what a request does not name (``llama_server.sampling_id``) and the GGUF file."""
        if self.managed == "llamacpp":
            try:
                build = llama_server.build_id()
            except (FileNotFoundError, OSError, subprocess.SubprocessError) as err:
                raise ServiceConfigError(str(err)) from None
            sampling = llama_server.sampling_id(self.server.get("sampling"))
            return f"llama-server:{build}:{sampling}:{Path(self.model_path).name}"
        return self.model

    def preflight(self) -> None:
        """Fail in seconds with one clear message: missing key, missing server, missing model file."""
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ServiceConfigError(f"model {self.model}: environment variable {self.api_key_env} "
                                     "(the API key) is not set")
        if self.managed == "llamacpp":
            try:
                llama_server.binary()
            except FileNotFoundError as err:
                raise ServiceConfigError(str(err)) from None
            if not Path(self.model_path).is_file():
                raise ServiceConfigError(f"GGUF model file not found: {self.model_path}")
        elif self.managed == "vllm" and shutil.which("vllm") is None:
            raise ServiceConfigError("managed vLLM server needs the `vllm` command (pip install vllm, GPU node)")
        elif self.managed is None:
            self._check_reachable()

    def _check_reachable(self, connect_timeout_s: float = 5.0) -> None:
        """Any HTTP answer (even 401) means the server is there; no answer stops the run now. A server that
        accepts the connection may answer late: one serving a request at a time (llama.cpp) holds
        ``/models`` until that request is done, e.g. for the other jobs of a sweep that share it; it gets
        the client's read timeout."""
        url = self.base_url.rstrip("/") + "/models"
        try:
            httpx.get(url, timeout=httpx.Timeout(float(self.client.get("timeout_s", 120)), connect=connect_timeout_s))
        except httpx.HTTPError as err:
            raise ServiceConfigError(f"cannot reach {self.base_url} for model {self.model} "
                                     f"({type(err).__name__}: {err})") from None


class ServiceHub(contextlib.AbstractContextManager):
    """Opens services into clients; shares cache, ledger, budget and managed servers."""

    def __init__(self, cache, ledger, budget, log_dir: str | os.PathLike) -> None:
        self.cache, self.ledger, self.budget = cache, ledger, budget
        self.log_dir = Path(log_dir)
        self._stack = contextlib.ExitStack()
        self._servers: dict[tuple, list[ManagedServer]] = {}  # a managed service's replicas
        self._clients: dict[int, tuple[LLMService, LLMClient]] = {}
        self._started = 0  # servers started so far: names their log files
        self._suspended: dict[int, LLMService] = {}  # services whose servers suspend() stopped

    def launch(self, service: LLMService) -> list[ManagedServer]:
        """Spawn ``service``'s managed servers (once per distinct server), all side by side, without waiting
        for them: ``open`` waits. Call it ahead of other work so that the model loads meanwhile."""
        key = service.server_key()
        if key not in self._servers:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            options = {k: v for k, v in service.server.items() if k != "replicas"}
            servers = []
            for _ in range(service.replicas):
                server = ManagedServer(kind=service.managed, model=service.model_path,
                                       log_path=str(self.log_dir / f"server_{self._started}.log"), **options)
                self._started += 1
                self._stack.callback(server.stop)
                servers.append(server.launch())
            self._servers[key] = servers
        return self._servers[key]

    def suspend(self) -> None:
        """Stop every managed server (e.g. while the agent trains: their memory is the trainer's) and drop the
        clients bound to them; :meth:`resume` or the next ``open`` starts them again (a second or so; their
        prompt caches start empty)."""
        for servers in self._servers.values():
            for server in servers:
                server.stop()
        self._servers.clear()
        self._suspended.update({id(s): s for s, _ in self._clients.values() if s.managed})
        self._clients = {k: (s, c) for k, (s, c) in self._clients.items() if not s.managed}

    def resume(self) -> None:
        """Launch again, without waiting, the servers that :meth:`suspend` stopped and that were in use, so that
        they load their model while other work runs; ``open`` waits for them."""
        for service in self._suspended.values():
            self.launch(service)
        self._suspended.clear()

    def open(self, service: LLMService) -> LLMClient:
        if id(service) in self._clients:
            return self._clients[id(service)][1]
        service.preflight()
        base_url, model, liveness = service.base_url, service.model, None
        if service.managed:
            servers = self.launch(service)
            for server in servers:
                server.start()  # waits for the model to load (launched above or ahead of time)
                server.check_alive()

            def liveness() -> None:
                for s in servers:
                    s.check_alive()

            base_url, model = [s.base_url for s in servers], servers[0].model_name
        if service.batch and self.cache is None:
            raise ServiceConfigError(f"model {service.model}: batch=true stores every answer in the response "
                                     "cache: set llm.cache=true")
        self._bind_price(service, model)
        client = LLMClient(base_url=base_url, model=model, api_key_env=service.api_key_env,
                           structured_output=service.structured_output, cache=self.cache, ledger=self.ledger,
                           budget=self.budget, model_identity=service.identity(), liveness=liveness,
                           batch=service.batch_options(),
                           # a managed server of ours has no rate limits to read: no pacing by headers
                           **{"pace_by_headers": service.managed is None, **service.client})
        self._clients[id(service)] = (service, client)
        return client

    def _bind_price(self, service: LLMService, model: str) -> None:
        """The ledger prices ``model`` (the name the client sends) as this service; a budget cap needs a price."""
        if self.ledger is None:
            return
        price = self.ledger.prices.for_service(service)
        if price is None and self.budget is not None and self.budget.max_usd is not None:
            raise ConfigError(f"budget.max_usd is set but {unpriced_message(service.identity())}")
        self.ledger.bind(model, price)

    def __exit__(self, *exc) -> bool | None:
        return self._stack.__exit__(*exc)

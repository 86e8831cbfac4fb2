"""The fake's ASGI app (Starlette): routes, shared state, and the test-only control endpoints.

Protocol routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

Control routes (not OpenAI's; for tests in this or another process):

- ``GET /_stats`` — counters (:class:`~.state.Stats`); ``?digests=1`` adds the per-body-digest counts,
  ``?timeline=1`` every chat attempt's (seconds, status), ``?batches=1`` each batch's status and counts;
- ``POST /_reset`` — zero the counters (files, batches and the prefix cache stay);
- ``GET /_config`` / ``POST /_config`` — read or change options (JSON object of
  :class:`~.state.FakeOptions` fields; ``{"outage_s": 2}`` answers every chat request 429 for 2 s).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import batches
from .chat import chat_endpoint, error_body, json_response
from .ratelimit import RateLimiter
from .state import FakeOptions, PrefixCache, Stats


class FakeState:
    def __init__(self, options: FakeOptions) -> None:
        self.options = options
        self.stats = Stats()
        self.prefix_cache = PrefixCache()
        self.outage_until = 0.0
        self._tmp = None
        if options.storage_dir:
            root = Path(options.storage_dir)
            root.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake_openai_")
            root = Path(self._tmp.name)
        self.files = batches.FileStore(root)
        self.batches: dict[str, dict] = {}
        self.batch_tasks: set = set()
        self.limiter = self._new_limiter()

    def _new_limiter(self) -> RateLimiter:
        o = self.options
        return RateLimiter(o.rpm, o.tpm, o.burst_s, o.enforce)

    def configure(self, **changes) -> None:
        outage = changes.pop("outage_s", None)
        self.options.update(**changes)
        if {"rpm", "tpm", "burst_s", "enforce"} & set(changes):
            self.limiter = self._new_limiter()  # new limits start with full buckets
        if outage is not None:
            self.outage_until = time.monotonic() + float(outage)

    def check_auth(self, request: Request) -> Response | None:
        key = self.options.api_key
        if key is None or request.headers.get("authorization") == f"Bearer {key}":
            return None
        return json_response(error_body("Incorrect API key provided.", code="invalid_api_key"), 401)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


async def models(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    if (denied := state.check_auth(request)) is not None:
        return denied
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in state.options.models]
    return json_response({"object": "list", "data": data})


async def stats(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    q = request.query_params
    out = state.stats.summary(digests=q.get("digests") == "1", timeline=q.get("timeline") == "1")
    if q.get("batches") == "1":
        out["batches"] = batches.batch_summary(state.batches)
    return json_response(out)


async def reset(request: Request) -> Response:
    request.app.state.fake.stats.reset()
    return json_response({"ok": True})


async def config(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    if request.method == "POST":
        try:
            state.configure(**json.loads(await request.body() or b"{}"))
        except (ValueError, TypeError) as e:
            return json_response(error_body(str(e)), 400)
    return json_response(dataclasses.asdict(state.options))


def build_app(options: FakeOptions | None = None) -> Starlette:
    state = FakeState(options or FakeOptions())
    app = Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_endpoint, methods=["POST"]),
        Route("/v1/files", batches.upload_file, methods=["POST"]),
        Route("/v1/files/{file_id}", batches.file_meta, methods=["GET"]),
        Route("/v1/files/{file_id}/content", batches.file_content, methods=["GET"]),
        Route("/v1/batches", batches.create_batch, methods=["POST"]),
        Route("/v1/batches", batches.list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batches.get_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", batches.cancel_batch, methods=["POST"]),
        Route("/_stats", stats, methods=["GET"]),
        Route("/_reset", reset, methods=["POST"]),
        Route("/_config", config, methods=["GET", "POST"]),
    ], max_body_size=None)
    app.state.fake = state
    return app

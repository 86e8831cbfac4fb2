"""A scriptable fault-injecting HTTP proxy on loopback, for testing the LLM client for real.

It forwards requests to an upstream OpenAI-compatible server (stdlib ``http.server`` in a
thread + ``http.client``), and for ``POST .../chat/completions`` pops the next action
from a script (default ``"pass"``):

- ``"pass"``: forward and return the upstream answer.
- ``("delay", seconds)``: wait ``seconds``, then as ``"pass"`` (an answer slow to arrive).
- ``("429", retry_after_s)``: answer 429 with a ``Retry-After`` header.
- ``"500"`` / ``"503"`` / ``("status", code, body)``: answer that status.
- ``("hang", seconds)``: accept the request and send nothing for ``seconds``, then close.
- ``"truncate"``: forward, then send only half the upstream body (full Content-Length) and close.
- ``"invalid_json"``: answer 200 with ``application/json`` that is not JSON.
- ``"echo_auth"``: answer 401 with the request's Authorization header in the body
  (like providers that quote a mangled key back).

It counts what it sees: ``hits`` (chat requests reaching it), ``forwarded`` (sent
upstream), ``delivered`` (complete upstream answers handed back: a list of
``(request_json, response_text)``) and keeps every ``Authorization`` header in ``auth_seen``.
Every response carries ``Connection: close`` so connection reuse cannot blur the counts.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class FaultProxy:
    def __init__(self, upstream_base_url: str) -> None:
        u = urlsplit(upstream_base_url)
        self.up_host, self.up_port = u.hostname or "127.0.0.1", u.port or 80
        self.up_prefix = u.path.rstrip("/")  # e.g. /v1
        self.script: deque = deque()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.reset()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                proxy._handle(self, None)

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                proxy._handle(self, self.rfile.read(n))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    # -- control ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.up_prefix}"

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        with self.lock:
            self.script.clear()
            self.hits = 0
            self.forwarded = 0
            self.delivered: list[tuple[dict, str]] = []
            self.events: list[tuple[float, str]] = []  # (monotonic time, action) per chat request
            self.auth_seen: list[str] = []

    def push(self, *actions) -> None:
        with self.lock:
            self.script.extend(actions)

    # -- request handling --------------------------------------------------------
    def _next_action(self):
        with self.lock:
            action = self.script.popleft() if self.script else "pass"
            self.hits += 1
            self.events.append((time.monotonic(), str(action)))
            return action

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes | None) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(self.up_host, self.up_port, timeout=300)
        try:
            headers = {"Content-Type": h.headers.get("Content-Type", "application/json")}
            if h.headers.get("Authorization"):
                headers["Authorization"] = h.headers["Authorization"]
            conn.request(h.command, h.path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type", "application/json"), r.read()
        finally:
            conn.close()

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype="application/json", extra=None, length=None):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.send_header("Connection", "close")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()
        h.close_connection = True

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes | None) -> None:
        try:
            if h.command != "POST" or not h.path.endswith("/chat/completions"):
                status, ctype, data = self._forward(h, body)
                self._send(h, status, data, ctype)
                return
            with self.lock:
                self.auth_seen.append(h.headers.get("Authorization", ""))
            action = self._next_action()
            kind = action[0] if isinstance(action, tuple) else action
            if kind == "429":
                retry_after = action[1] if isinstance(action, tuple) else 1
                self._send(h, 429, b'{"error":{"message":"rate limited (injected)"}}', extra={"Retry-After": str(retry_after)})
            elif kind in ("500", "503"):
                self._send(h, int(kind), b'{"error":{"message":"server error (injected)"}}')
            elif kind == "status":
                self._send(h, int(action[1]), action[2].encode() if len(action) > 2 else b"{}")
            elif kind == "echo_auth":
                msg = json.dumps({"error": {"message": f"Incorrect API key provided: {h.headers.get('Authorization')}"}})
                self._send(h, 401, msg.encode())
            elif kind == "hang":
                self.stop_event.wait(action[1] if isinstance(action, tuple) else 30)
                h.close_connection = True
                _hard_close(h)
            elif kind == "invalid_json":
                self._send(h, 200, b'{"id": "x", "choices": [ {"message": ')
            elif kind == "truncate":
                with self.lock:
                    self.forwarded += 1
                status, ctype, data = self._forward(h, body)
                half = data[: len(data) // 2]
                self._send(h, status, half, ctype, length=len(data))
                _hard_close(h)
            elif kind in ("pass", "delay"):
                if kind == "delay":
                    time.sleep(action[1])
                with self.lock:
                    self.forwarded += 1
                status, ctype, data = self._forward(h, body)
                if status == 200:  # noted before it is sent: a fast client may check the count as soon as it has it
                    with self.lock:
                        self.delivered.append((json.loads(body or b"{}"), data.decode("utf-8", "replace")))
                self._send(h, status, data, ctype)
            else:
                raise ValueError(f"unknown fault action {action!r}")
        except OSError:  # upstream refused or dropped the connection (a dead server): drop ours too
            h.close_connection = True
            _hard_close(h)


def _hard_close(h: BaseHTTPRequestHandler) -> None:
    try:
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

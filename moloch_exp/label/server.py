"""The labelling page's server: the standard library's threading HTTP server on 127.0.0.1.

    python -m moloch_exp.label serve RUN_DIR [--port 8765]    # then open http://127.0.0.1:8765/

    GET  /                                  the page (moloch_exp/label/page.py; no data in it)
    GET  /api/state?labeller=NAME           {"total", "done", "first_open"}: where to resume
    GET  /api/item?labeller=NAME&pos=K      {"pos", "total", "done", "item": Item.public(), "answer"}
    POST /api/answer  {"labeller", "item_id", "answer": yes|no|unsure, "note"}
                                            stored (one SQLite transaction) before the reply:
                                            {"saved": true, "done", "total", "next": the next open position}

Nothing the browser receives names the method, the model or the judge's verdict: items go out
through ``Item.public()`` only, ids are salted hashes, and the order is shuffled.
"""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from moloch_exp.label.items import LabelSample
from moloch_exp.label.page import PAGE
from moloch_exp.label.store import LabelStore, check_labeller, parse_answer

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


class BadRequest(ValueError):
    pass


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sample: LabelSample, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.sample = sample
        self.store = LabelStore(sample.db_path)
        self.ids = [it.item_id for it in sample.items]
        super().__init__((host, port), LabelHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    # ------------------------------------------------------------------ the labeller's position
    def answered(self, labeller: str) -> dict[str, dict]:
        return {a.item_id: {"answer": a.answer, "note": a.note} for a in self.store.answers(labeller)
                if a.item_id in self.sample.by_id}

    def next_open(self, answered: dict, after: int = -1) -> int | None:
        """The first unlabelled position after ``after``, else the first one from the start; None when all are done."""
        order = list(range(after + 1, len(self.ids))) + list(range(0, after + 1))
        return next((p for p in order if self.ids[p] not in answered), None)

    def state(self, labeller: str) -> dict:
        done = self.answered(labeller)
        return {"total": len(self.ids), "done": len(done), "first_open": self.next_open(done)}

    def item(self, labeller: str, pos: int) -> dict:
        if not 0 <= pos < len(self.ids):
            raise BadRequest(f"pos must be between 0 and {len(self.ids) - 1}")
        done = self.answered(labeller)
        item = self.sample.items[pos]
        return {"pos": pos, "total": len(self.ids), "done": len(done), "item": item.public(),
                "answer": done.get(item.item_id)}

    def save(self, body: dict) -> dict:
        try:
            labeller = check_labeller(body.get("labeller", ""))
            answer = parse_answer(body.get("answer", ""))
        except ValueError as err:
            raise BadRequest(str(err)) from None
        item_id = str(body.get("item_id", ""))
        if item_id not in self.sample.by_id:
            raise BadRequest(f"unknown item {item_id!r}")
        note = body.get("note") or ""
        if not isinstance(note, str):
            raise BadRequest("note must be text")
        self.store.put(item_id, labeller, answer, note.strip(), via="page")
        done = self.answered(labeller)
        return {"saved": True, "done": len(done), "total": len(self.ids),
                "next": self.next_open(done, self.ids.index(item_id))}


class LabelHandler(BaseHTTPRequestHandler):
    server: LabelServer
    server_version = "moloch-label/1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the stdlib's signature)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: dict, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _labeller(self, query: dict) -> str:
        try:
            return check_labeller((query.get("labeller") or [""])[0])
        except ValueError as err:
            raise BadRequest(str(err)) from None

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/state":
                self._json(self.server.state(self._labeller(query)))
            elif url.path == "/api/item":
                try:
                    pos = int((query.get("pos") or [""])[0])
                except ValueError:
                    raise BadRequest("pos must be a number") from None
                self._json(self.server.item(self._labeller(query), pos))
            else:
                self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        except BadRequest as err:
            self._json({"error": str(err)}, HTTPStatus.BAD_REQUEST)

    def do_POST(self) -> None:  # noqa: N802
        if urlparse(self.path).path != "/api/answer":
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                raise BadRequest(f"a body of 1 to {MAX_BODY} bytes is expected")
            try:
                body = json.loads(self.rfile.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadRequest("the body is not JSON") from None
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            self._json(self.server.save(body))
        except BadRequest as err:
            self._json({"error": str(err)}, HTTPStatus.BAD_REQUEST)


def serve(sample: LabelSample, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted (Ctrl-C); prints the page's address first (port 0: a free port)."""
    server = LabelServer(sample, host, port)
    print(f"labelling page: {server.url}  ({len(sample.items)} items; every answer is saved at once in "
          f"{sample.db_path}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

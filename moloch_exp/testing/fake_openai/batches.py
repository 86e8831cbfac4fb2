"""The fake's Files and Batch API: ``/v1/files`` (multipart upload, metadata, content) and ``/v1/batches``.

A batch moves ``validating`` → ``in_progress`` → ``finalizing`` → ``completed`` (delays from the
options), or to ``failed`` (an input file OpenAI would refuse: bad JSON line, missing field, another
endpoint, mixed models, a repeated ``custom_id``, more than ``max_file_requests`` lines or
``max_file_bytes``), ``expired`` (``batch_expire_after``: the rest of the lines are ``batch_expired``
errors) or ``cancelled``. Output and error files are OpenAI's JSONL::

    {"id": "batch_req_…", "custom_id": "…", "response": {"status_code": 200, "request_id": "…", "body": {chat.completion}}, "error": null}
    {"id": "batch_req_…", "custom_id": "…", "response": {"status_code": 500, "request_id": "…", "body": {"error": {…}}}, "error": null}
    {"id": "batch_req_…", "custom_id": "…", "response": null, "error": {"code": "batch_expired", "message": "…"}}
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from . import answers
from .chat import BadRequest, check_body, complete, error_body, json_response

if TYPE_CHECKING:
    from .app import FakeState

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta: dict[str, dict] = {}

    def add(self, data: bytes, filename: str, purpose: str) -> dict:
        fid = _new_id("file-")
        (self.root / fid).write_bytes(data)
        meta = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None,
                "status_details": None}
        self.meta[fid] = meta
        return meta

    def read(self, fid: str) -> bytes:
        return (self.root / fid).read_bytes()


def _not_found(what: str, id_: str) -> Response:
    return json_response(error_body(f"No {what} found with id '{id_}'.", code="not_found"), 404)


async def upload_file(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    if (denied := state.check_auth(request)) is not None:
        return denied
    form = await request.form(max_part_size=1024 * 1024)
    upload, purpose = form.get("file"), form.get("purpose")
    if upload is None or isinstance(upload, str) or not purpose:
        return json_response(error_body("'file' and 'purpose' are required (multipart/form-data)"), 400)
    data = await upload.read()
    meta = state.files.add(data, upload.filename or "upload.jsonl", str(purpose))
    with state.stats.lock:
        state.stats.files_uploaded += 1
    return json_response(meta)


async def file_meta(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    fid = request.path_params["file_id"]
    meta = state.files.meta.get(fid)
    return json_response(meta) if meta else _not_found("file", fid)


async def file_content(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    fid = request.path_params["file_id"]
    if fid not in state.files.meta:
        return _not_found("file", fid)
    return Response(state.files.read(fid), media_type="application/octet-stream")


async def create_batch(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    if (denied := state.check_auth(request)) is not None:
        return denied
    try:
        body = json.loads(await request.body())
    except ValueError:
        return json_response(error_body("We could not parse the JSON body of your request."), 400)
    fid = body.get("input_file_id")
    if fid not in state.files.meta:
        return _not_found("file", str(fid))
    if body.get("endpoint") != ENDPOINT:
        return json_response(error_body(f"the fake runs batches for {ENDPOINT} only", param="endpoint"), 400)
    if body.get("completion_window") != "24h":
        return json_response(error_body("completion_window must be '24h'", param="completion_window"), 400)
    now = int(time.time())
    batch = {"id": _new_id("batch_"), "object": "batch", "endpoint": ENDPOINT, "errors": None,
             "input_file_id": fid, "completion_window": "24h", "status": "validating", "output_file_id": None,
             "error_file_id": None, "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
             "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
             "cancelling_at": None, "cancelled_at": None,
             "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
    state.batches[batch["id"]] = batch
    with state.stats.lock:
        state.stats.batches_created += 1
    task = asyncio.get_running_loop().create_task(_run(state, batch))
    state.batch_tasks.add(task)
    task.add_done_callback(state.batch_tasks.discard)
    return json_response(batch)


async def get_batch(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    bid = request.path_params["batch_id"]
    batch = state.batches.get(bid)
    return json_response(batch) if batch else _not_found("batch", bid)


async def list_batches(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    items = sorted(state.batches.values(), key=lambda b: (b["created_at"], b["id"]), reverse=True)
    after = request.query_params.get("after")
    if after:
        ids = [b["id"] for b in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(request.query_params.get("limit", 20))
    page = items[:limit]
    return json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                          "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit})


async def cancel_batch(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    bid = request.path_params["batch_id"]
    batch = state.batches.get(bid)
    if batch is None:
        return _not_found("batch", bid)
    if batch["status"] not in TERMINAL:
        batch["status"] = "cancelling"
        batch["cancelling_at"] = int(time.time())
    return json_response(batch)


# ----------------------------------------------------------------------------- the batch's life
def _validate(state: "FakeState", data: bytes) -> tuple[list[dict], list[dict]]:
    """``(lines, errors)``: the parsed lines, or OpenAI-style validation errors."""
    opts = state.options
    if len(data) > opts.max_file_bytes:
        return [], [{"code": "file_too_large", "message": f"input file is over {opts.max_file_bytes} bytes",
                     "param": None, "line": None}]
    lines, errors, ids, models = [], [], set(), set()
    for n, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                           "param": None, "line": n})
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in line]
        if missing:
            errors.append({"code": "missing_required_parameter", "message": f"missing {missing}", "param": missing[0],
                           "line": n})
            continue
        if line["url"] != ENDPOINT:
            errors.append({"code": "invalid_url", "message": f"url must be {ENDPOINT}", "param": "url", "line": n})
        if line["custom_id"] in ids:
            errors.append({"code": "duplicate_custom_id", "message": "custom_id must be unique in a batch",
                           "param": "custom_id", "line": n})
        ids.add(line["custom_id"])
        models.add((line.get("body") or {}).get("model"))
        lines.append(line)
    if len(models) > 1:
        errors.append({"code": "mismatched_model", "message": "every line of a batch must use the same model",
                       "param": "model", "line": None})
    if len(lines) > opts.max_file_requests:
        errors.append({"code": "too_many_requests", "message": f"a batch holds at most {opts.max_file_requests}",
                       "param": None, "line": None})
    return lines, errors


def _line_result(state: "FakeState", line: dict) -> tuple[dict, bool]:
    """The output (or error) line for one input line; True when it is an answer."""
    body = line["body"]
    out_id = _new_id("batch_req_")
    try:
        check_body(state, body)
    except BadRequest as e:
        return {"id": out_id, "custom_id": line["custom_id"], "error": None,
                "response": {"status_code": e.status, "request_id": out_id, "body": e.body}}, False
    digest = answers.body_digest(body)
    with state.stats.lock:
        state.stats.batch_tries_by_digest[digest] += 1
        tries = state.stats.batch_tries_by_digest[digest]
    if answers.share_hit(digest, f"batchfail|{tries}", state.options.batch_fail_share):
        status = int(state.options.batch_fail_status)
        err = error_body("The server had an error processing this request (injected).",
                         "server_error" if status >= 500 else "invalid_request_error")
        return {"id": out_id, "custom_id": line["custom_id"], "error": None,
                "response": {"status_code": status, "request_id": out_id, "body": err}}, False
    completion = complete(state, body, digest)
    with state.stats.lock:
        state.stats.batch_lines_by_digest[digest] += 1
    return {"id": out_id, "custom_id": line["custom_id"], "error": None,
            "response": {"status_code": 200, "request_id": out_id, "body": completion}}, True


def _error_line(line: dict, code: str, message: str) -> dict:
    return {"id": _new_id("batch_req_"), "custom_id": line["custom_id"], "response": None,
            "error": {"code": code, "message": message}}


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n" for r in rows)


def _set_status(state: "FakeState", batch: dict, status: str) -> None:
    batch["status"] = status
    batch[f"{status}_at"] = int(time.time())
    if status in TERMINAL:
        with state.stats.lock:
            state.stats.batches_by_status[status] += 1


async def _run(state: "FakeState", batch: dict) -> None:
    opts = state.options
    await asyncio.sleep(opts.batch_validating_s)
    lines, errors = _validate(state, state.files.read(batch["input_file_id"]))
    if errors:
        batch["errors"] = {"object": "list", "data": errors}
        _set_status(state, batch, "failed")
        return
    if batch["status"] == "cancelling":
        _set_status(state, batch, "cancelled")
        return
    _set_status(state, batch, "in_progress")
    counts = batch["request_counts"]
    counts["total"] = len(lines)
    outputs: list[dict] = []
    failures: list[dict] = []
    expire_at = None if opts.batch_expire_after is None else int(opts.batch_expire_after * len(lines))
    owed = 0.0
    ending = "completed"
    for i, line in enumerate(lines):
        if batch["status"] == "cancelling" or (expire_at is not None and i >= expire_at):
            ending = "cancelled" if batch["status"] == "cancelling" else "expired"
            code, msg = (("batch_cancelled", "This request was not executed because the batch was cancelled.")
                         if ending == "cancelled" else
                         ("batch_expired", "This request could not be executed before the completion window expired."))
            failures.extend(_error_line(rest, code, msg) for rest in lines[i:])
            counts["failed"] += len(lines) - i
            break
        row, ok = _line_result(state, line)
        (outputs if ok else failures).append(row)
        counts["completed" if ok else "failed"] += 1
        owed += opts.batch_line_s
        if owed >= 0.01 or i % 200 == 199:
            await asyncio.sleep(owed)
            owed = 0.0
    if ending == "completed":
        _set_status(state, batch, "finalizing")
        await asyncio.sleep(opts.batch_finalizing_s)
    if outputs:
        batch["output_file_id"] = state.files.add(_jsonl(outputs), f"{batch['id']}_output.jsonl", "batch_output")["id"]
    if failures:
        batch["error_file_id"] = state.files.add(_jsonl(failures), f"{batch['id']}_error.jsonl", "batch_output")["id"]
    _set_status(state, batch, ending)


def batch_summary(batches: dict[str, dict[str, Any]]) -> dict:
    return {b["id"]: {"status": b["status"], "request_counts": b["request_counts"], "input_file_id": b["input_file_id"]}
            for b in batches.values()}

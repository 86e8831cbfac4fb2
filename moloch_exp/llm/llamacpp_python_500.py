"""One server's quirk, kept apart: llama-cpp-python's server answers a request it cannot validate (e.g.
``response_format`` ``{"type": "json_schema"}``) with HTTP 500, which would otherwise be retried as a
server error. Recognised here and made fatal with a hint; with llama.cpp's own ``llama-server`` (which
answers such a request with a 400) this module and its one call in :mod:`.http_errors` can go.
"""

from __future__ import annotations


def rejected_request_hint(status: int, body: str, structured_output: str) -> str | None:
    """A hint to append when ``status``/``body`` is llama-cpp-python refusing the request; else None."""
    if status == 500 and "validation error" in body and "response_format" in body:
        return (f" (the server rejected the request; structured_output={structured_output!r} may not fit "
                "this backend: use 'llamacpp' for llama-cpp-python's server)")
    return None

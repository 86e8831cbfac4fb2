"""llama.cpp's own OpenAI-compatible server, ``llama-server``: where the binary is, which build it is, and the
command line that ``ManagedServer(kind="llamacpp")`` runs.

    bash scripts/setup.sh                       # builds it once (portable x86-64-v3) into .venv/bin/llama-server
    .venv/bin/llama-server --version            # version: 0.5.0-dev (build 1, commit 0c1e570)
    MOLOCH_LLAMA_SERVER=/opt/llama-server python run.py   # another build: its own response-cache identity

The binary is built by ``scripts/setup.sh`` from the llama.cpp that the pinned llama-cpp-python sdist vendors
(``vendor/llama.cpp``, ``tools/server``). What the command asks of it:

- ``-np N`` slots, each with ``n_ctx`` cells of its own (``-c`` is ``n_ctx * N``; with ``-np`` given,
  llama.cpp keeps one cache stream per slot), decoded together by its continuous batching;
- prompt caching: a slot keeps its last prompt and a request evaluates only what follows the common prefix
  (``cache_prompt``, on by default); a request goes to the idle slot whose cached prompt it shares most of
  (``--slot-prompt-similarity``); idle slots are saved to a host-memory prompt cache that any slot can load
  (``--cache-ram`` MiB), so a prefix evaluated in one slot is copied, not evaluated again, into another;
- ``--cache-reuse N`` (off by default): reuse cached chunks after a mismatch by shifting them. The shifted
  cells were computed after another prefix, so the answer then depends on the request before it;
- ``--top-k``, ``--top-p``, ``--min-p`` (``sampling``): what the server applies to a request that does not name
  them. A request names its temperature (and top_p where set), never top_k or min_p, so these are part of
  what an answer means: llama.cpp's own defaults (``LLAMACPP_SAMPLING``: top_k 40, top_p 0.95, min_p 0.05,
  applied in that order before the temperature) keep a vote "at temperature 0.7" among the 40 likeliest
  tokens; ``PLAIN_SAMPLING`` (0, 1, 0) is the OpenAI protocol's meaning, the temperature alone. The
  response cache's identity of a managed llama.cpp model names them (``sampling_id``).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

__all__ = ["BINARY_ENV", "LLAMACPP_SAMPLING", "PLAIN_SAMPLING", "binary", "build_id", "command", "sampling_id"]

BINARY_ENV = "MOLOCH_LLAMA_SERVER"
NAME = "llama-server"
#: llama-server's defaults for a request that does not name them (and this project's, written out in
#: conf/audience/local.yaml and conf/judge/local.yaml, so that a run samples as every earlier one did)
LLAMACPP_SAMPLING = MappingProxyType({"top_k": 40, "top_p": 0.95, "min_p": 0.05})
#: the OpenAI protocol's meaning: the request's temperature (and top_p) alone
PLAIN_SAMPLING = MappingProxyType({"top_k": 0, "top_p": 1.0, "min_p": 0.0})


def _sampling(sampling: Mapping | None) -> dict:
    """``sampling`` over LLAMACPP_SAMPLING, checked: only top_k, top_p and min_p."""
    given = dict(sampling or {})
    unknown = sorted(set(given) - set(LLAMACPP_SAMPLING))
    if unknown:
        raise ValueError(f"server.sampling takes top_k, top_p and min_p, not {', '.join(unknown)}")
    merged = {**LLAMACPP_SAMPLING, **{k: v for k, v in given.items() if v is not None}}
    return {"top_k": int(merged["top_k"]), "top_p": float(merged["top_p"]), "min_p": float(merged["min_p"])}


def sampling_id(sampling: Mapping | None = None) -> str:
    """``top_k40-top_p0.95-min_p0.05``: the sampling a server applies, for the response cache's identity."""
    s = _sampling(sampling)
    return f"top_k{s['top_k']}-top_p{s['top_p']:g}-min_p{s['min_p']:g}"


def binary() -> str:
    """The ``llama-server`` to run: ``$MOLOCH_LLAMA_SERVER``, else the one setup.sh put beside this Python
    (``.venv/bin/llama-server``), else the first on ``PATH``. Raises FileNotFoundError naming the fix."""
    named = os.environ.get(BINARY_ENV, "").strip()
    if named:
        if not os.access(named, os.X_OK):
            raise FileNotFoundError(f"{BINARY_ENV}={named} is not an executable file")
        return named
    for candidate in (Path(sys.prefix) / "bin" / NAME, Path(sys.executable).parent / NAME):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(NAME)
    if found:
        return found
    raise FileNotFoundError(f"the managed llama.cpp server needs the `{NAME}` binary: run `bash scripts/setup.sh` "
                            f"(it builds one into .venv/bin) or set {BINARY_ENV} to one")


@functools.lru_cache(maxsize=8)
def _build_id(path: str, size: int, mtime_ns: int) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    m = re.search(r"version: (\S+) \(build (\d+), commit (\w+)\)", text)
    version = f"{m.group(1)}-b{m.group(2)}-{m.group(3)}" if m else "unknown"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{version}-{digest.hexdigest()[:12]}"


def build_id(path: str | None = None) -> str:
    """``<version>-b<build>-<commit>-<sha256 of the binary, 12 hex>``, e.g. ``0.5.0-dev-b1-0c1e570-1a2b3c4d5e6f``:
    the llama.cpp source (``--version``) and the exact build (flags and compiler change the bytes, and
    can change the floats). Part of the response cache's identity of a managed llama.cpp model."""
    path = path or binary()
    st = os.stat(path)
    return _build_id(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def command(binary_path: str, model: str, alias: str, host: str, port: int, n_ctx: int, n_parallel: int,
            threads: int, threads_batch: int, chat_template: str | None = None, cache_ram_mib: int = 256,
            slot_similarity: float = 0.1, cache_reuse: int = 0, log_verbosity: int = 3,
            sampling: Mapping | None = None) -> list[str]:
    """The ``llama-server`` command line (see the module docstring for what each option buys)."""
    top = _sampling(sampling)
    cmd = [
        binary_path, "--model", str(model), "--alias", alias,
        "--host", host, "--port", str(port),
        "--ctx-size", str(n_ctx * n_parallel), "--parallel", str(n_parallel),
        "--threads", str(threads), "--threads-batch", str(threads_batch),
        "--cache-ram", str(cache_ram_mib), "--slot-prompt-similarity", str(slot_similarity),
        "--cache-reuse", str(cache_reuse),
        "--log-verbosity", str(log_verbosity), "--no-webui", "--metrics",
        "--top-k", str(top["top_k"]), "--top-p", str(top["top_p"]), "--min-p", str(top["min_p"]),
    ]  # fmt: skip
    if chat_template:
        cmd += ["--chat-template", chat_template]
    return cmd

"""Shared test fixtures: paths, Hydra composition, the shared paper data, the session's llama.cpp server, and
the test tiers' markers.

Tiers (setup.cfg declares the markers; the README says which command runs which):
    pytest -m "not slow and not e2e and not server and not browser"   # unit: minutes, no run.py, no server
    pytest                                                             # everything but slow
    pytest -m "slow or not slow" -n 2 --dist loadfile                  # CI: everything, on both cores
A test that uses the ``llama_server`` fixture (directly or through another fixture) is marked ``server``, and
one that uses ``chromium`` is marked ``browser``, here at collection; tests that start a server of their own,
or ``run.py``/a whole cell in a subprocess (``e2e``), carry the marker themselves.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as moloch_exp/__init__.py: before a test module imports torch

from compose_helper import SHARED_DATA

#: Set by .ci/run: CI has the shared data, so a missing directory there is an error, not a skip.
REQUIRE_SHARED_ENV = "MOLOCH_REQUIRE_SHARED"


def shared_dir(name: str) -> Path:
    """A directory of the shared data (../shared/data/<name>, or under $MOLOCH_SHARED_DATA).

    A user's clone has no ../shared beside it: the test skips, naming the missing directory.
    With MOLOCH_REQUIRE_SHARED=1 (CI) its absence fails the test instead."""
    d = SHARED_DATA / name
    if not d.is_dir():
        why = f"shared data directory {d} is missing (set MOLOCH_SHARED_DATA to the folder holding {name}/)"
        if os.environ.get(REQUIRE_SHARED_ENV, "") not in ("", "0"):
            pytest.fail(f"{why}; {REQUIRE_SHARED_ENV} is set, so it is required")
        pytest.skip(why)
    return d


#: Set by .ci/run: CI installs the system packages (scripts/system_packages.sh), so a missing one fails there.
REQUIRE_SYSTEM_ENV = "MOLOCH_REQUIRE_SYSTEM"


def require_system(binary: str) -> str:
    """The path of a system program the test needs (e.g. ``chromium``, ``redis-server``).

    Missing on a contributor's machine: the test skips, naming the package script; with
    MOLOCH_REQUIRE_SYSTEM=1 (CI) it fails instead."""
    import shutil

    path = shutil.which(binary)
    if path is None:
        why = f"{binary} is not installed (bash scripts/system_packages.sh installs it)"
        if os.environ.get(REQUIRE_SYSTEM_ENV, "") not in ("", "0"):
            pytest.fail(f"{why}; {REQUIRE_SYSTEM_ENV} is set, so it is required")
        pytest.skip(why)
    return path


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "llama_server" in names:
            item.add_marker(pytest.mark.server)
        if "chromium" in names:
            item.add_marker(pytest.mark.browser)
    items[:] = longest_files_first(items)


def longest_files_first(items: list) -> list:
    """Whole test files in order of expected length: files marked slow as a whole, then files with an e2e or
    slow test, then the rest, each group in collection order. Under ``-n 2 --dist loadfile`` (CI) a worker
    takes whole files from the front of this order, so a 5-minute file no longer starts last while the other
    worker has nothing left (the whole suite: 24 min, of which the last 5 on one worker)."""
    def file_of(item) -> str:
        return item.nodeid.split("::")[0]

    def group(item) -> int:
        if not (item.get_closest_marker("slow") or item.get_closest_marker("e2e")):
            return 2
        marks = getattr(getattr(item, "module", None), "pytestmark", [])
        return 0 if any(m.name == "slow" for m in (marks if isinstance(marks, list) else [marks])) else 1

    per_file: dict[str, int] = {}
    for item in items:
        per_file[file_of(item)] = min(group(item), per_file.get(file_of(item), 2))
    order = {f: k for k, f in enumerate(per_file)}
    return sorted(items, key=lambda it: (per_file[file_of(it)], order[file_of(it)]))


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """The session's one llama.cpp server (SmolLM2, model name ``smollm2``), shared by every test that needs an
    OpenAI-protocol endpoint; tests that kill or restart a server start a small one of their own."""
    from moloch_exp.llm import ChatRequest, LLMClient, ManagedServer

    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    # threads=1: the test process shares the 2 cores; llama.cpp threads stall badly when a core is busy
    # log_verbosity 4: the log also holds the build's CPU features and every prompt-cache decision
    with ManagedServer(kind="llamacpp", n_ctx=2048, threads=1, model_name="smollm2", log_path=str(log),
                       log_verbosity=4) as srv:
        # warm up (the first request pages the model in), so no test's timeout includes it
        LLMClient(srv.base_url, "smollm2", timeout_s=120, progress=False).chat_many(
            [ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=2)], desc="warm-up")
        yield srv


@pytest.fixture(scope="session")
def paper_dir() -> Path:
    """The paper's splits and personas (../shared/data/molochs_bargain)."""
    return shared_dir("molochs_bargain")


@pytest.fixture(scope="session")
def team_shard_dir() -> Path:
    """The EM and stance probe inputs (../shared/data/team_shard)."""
    return shared_dir("team_shard")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference code's protocol as data (../shared/data/molochs_bargain/reference)."""
    return shared_dir("molochs_bargain/reference")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session: converted models are built once for all tests."""
    return Path(os.environ.get("MOLOCH_TEST_CACHE", tmp_path_factory.mktemp("moloch_cache")))


#: Flags for Debian's chromium on a closed network (without the background-networking ones it floods
#: the machine with refused connections) and as root in a container (--no-sandbox).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def chromium():
    """A headless Debian chromium driven by Playwright (no browser download: executable_path), one per test module.

    Per module, not per session: while Playwright's sync API is open it holds an asyncio loop marked running on the
    main thread, so any later test calling ``asyncio.run`` would fail. Tests open pages with
    ``page = chromium.new_page()`` and close them; mark them ``@pytest.mark.browser``."""
    exe = require_system("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()

"""`python run.py` whose managed llama.cpp server is killed (SIGKILL, SIGSEGV) in the middle of the
audience's collection votes: the run stops within seconds with one line naming the server and the
signal, exit code non-zero, no traceback, and the collection is not stored as finished.

    pytest tests/test_server_death_e2e.py -q
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from compose_helper import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.server]

# Tiny agent, 4 anchors x 5 voters = 20 collection votes: enough to kill the server between two of them.
ARGS = ["model=tiny", "task=elections", "method=rft", "anchors.n_train=4", "anchors.n_test=2",
        "audience.n_voters=5", "audience.max_tokens=60", "audience.thought_max_chars=40",
        "generator.max_new_tokens=16", "generator.batch_size=8", "trainer.args.max_steps=1"]
VOTE_DONE = "stop processing"  # llama-server's line when a slot finished a request


def _server_of(run: psutil.Process) -> psutil.Process | None:
    for child in run.children(recursive=True):
        try:
            if child.name() == "llama-server":
                return child
        except psutil.NoSuchProcess:
            pass
    return None


@pytest.mark.slow  # about 75 s each on 2 shared cores (most of it start-up and generation)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_run_stops_in_seconds_with_one_line_when_the_server_dies(sig, cache_dir, tmp_path):
    out = tmp_path / "run"
    # the session's model cache (the tiny model is built once); no response cache, so every vote is live
    cmd = [sys.executable, "run.py", *ARGS, "llm.cache=false", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={out}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = out / "logs" / "server_0.log"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:  # wait for the first answered vote
            if log.is_file() and VOTE_DONE in log.read_text(errors="replace"):
                break
            time.sleep(0.1)
        assert run.poll() is None, run.communicate()[1][-3000:]
        server = _server_of(psutil.Process(run.pid))
        assert server is not None
        t_kill = time.monotonic()
        os.kill(server.pid, sig)
        _, stderr = run.communicate(timeout=60)
        seconds = time.monotonic() - t_kill
    finally:
        if run.poll() is None:
            run.kill()
    print(f"\n{sig.name}: run ended {seconds:.1f} s after the kill; stderr ends:\n{stderr[-1500:]}")
    assert run.returncode != 0
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ServerDied: llamacpp server for model ") and f"signal {sig.name}" in last, last
    assert "collect: audience votes" in last  # which batch, and how far it got
    assert seconds < 15, seconds  # Python start-up of the teardown included; detection itself is sub-second
    # the interrupted collection is not stored as finished (finished stages are linked into the output)
    assert not (out / "stages" / "collect").exists() and (out / "stages" / "prepare").exists()

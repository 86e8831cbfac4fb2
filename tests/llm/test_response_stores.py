"""The response cache's stores (sqlite, files, redis): 8 processes reading and writing 20,000 overlapping
keys at once through each (nothing lost, nothing corrupted, each answer stored once), the same key in
every store, the copy command between them, and the file store's guarantees. Redis is a real server
(Debian's redis-server) started here."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redis_server import redis_server
from store_worker import answer, key_of

from moloch_exp.errors import ConfigError, DataError, ServiceError
from moloch_exp.llm import ResponseCache, cache_key
from moloch_exp.llm.stores import FileStore, RedisStore, SqliteStore, open_store
from moloch_exp.llm.types import ChatRequest
from moloch_exp.protocols import ResponseStore

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
N_KEYS, N_PROCS = 20_000, 8


def require_system(config, binary: str) -> str:
    """tests/conftest.py's require_system (this directory's conftest shadows the name ``conftest``)."""
    return config.pluginmanager.get_plugin(str(REPO / "tests" / "conftest.py")).require_system(binary)


@pytest.fixture(scope="module")
def redis_port(request, tmp_path_factory):
    binary = require_system(request.config, "redis-server")
    with redis_server(binary, tmp_path_factory.mktemp("redis")) as port:
        yield port


def spec_for(kind: str, tmp_path: Path, redis_port: int | None) -> str:
    if kind == "sqlite":
        return f"sqlite:{tmp_path / 'responses.sqlite'}"
    if kind == "files":
        return f"files:{tmp_path / 'responses'}"
    return f"redis://127.0.0.1:{redis_port}/0?namespace=t{time.time_ns()}"


@pytest.fixture(params=["sqlite", "files", "redis"])
def spec(request, tmp_path):
    port = request.getfixturevalue("redis_port") if request.param == "redis" else None
    return spec_for(request.param, tmp_path, port)


def run_workers(spec: str, tmp_path: Path) -> list[dict]:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    procs = [subprocess.Popen([sys.executable, str(HERE / "store_worker.py"), spec, str(w), str(N_KEYS), str(go),
                               str(tmp_path / f"report{w}.json")], env=env, stderr=subprocess.PIPE, text=True)
             for w in range(N_PROCS)]
    time.sleep(2)  # imports done: all start together
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return [json.loads((tmp_path / f"report{w}.json").read_text()) for w in range(N_PROCS)]


@pytest.mark.slow  # about a minute per store on 2 busy cores
def test_eight_processes_overlapping_keys_nothing_lost_or_corrupted_each_answer_stored_once(spec, tmp_path):
    started = time.time()
    reports = run_workers(spec, tmp_path)
    elapsed = time.time() - started
    assert [r["errors"] for r in reports] == [[]] * N_PROCS
    winner = {}
    for w, r in enumerate(reports):
        for i in r["won"]:
            assert i not in winner, f"key {i} stored by workers {winner[i]} and {w}"
            winner[i] = w
    assert len(winner) == N_KEYS  # each answer stored exactly once: the writes that won, counted
    contested = sum(len(r["won"]) for r in reports)
    assert contested == N_KEYS
    # every worker read, for every key, the answer that won, never a later one
    for w, r in enumerate(reports):
        assert r["seen"] == [winner[i] for i in range(N_KEYS)], f"worker {w} saw another answer"
    store = open_store(spec)
    assert len(store) == N_KEYS
    stored = dict(store.iterate())
    assert set(stored) == {key_of(i) for i in range(N_KEYS)}
    assert all(stored[key_of(i)] == answer(i, winner[i]) for i in range(N_KEYS))
    spread = sorted(len(r["won"]) for r in reports)
    lost = sum(r["lost"] for r in reports)  # both missed, both put: the second put was refused
    print(f"{spec.split(':')[0]}: {N_PROCS} processes x {N_KEYS} keys in {elapsed:.1f}s; writes won per process "
          f"{spread}; {lost} puts refused because another process stored the key first")


def test_every_store_is_a_response_store_and_pickles(spec):
    store = open_store(spec)
    assert isinstance(store, ResponseStore)
    cache = ResponseCache(store)
    key = cache_key("llamacpp:smollm2.gguf", ChatRequest(messages=[("user", "hi")], max_tokens=5, seed=3))
    assert cache.get(key) is None and key not in cache
    assert cache.put(key, {"text": "hello", "prompt_tokens": 3}) is True
    assert cache.put(key, {"text": "another answer"}) is False  # put-if-absent: the first answer stays
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.get(key) == {"text": "hello", "prompt_tokens": 3} and key in clone and len(clone) == 1
    clone.close()
    cache.close()


def test_the_same_request_is_the_same_key_in_every_store_and_the_copy_command(tmp_path, redis_port):
    reqs = [ChatRequest(messages=[("system", "vote"), ("user", f"ballot {i}")], max_tokens=64, seed=i,
                        temperature=0.7, json_schema={"type": "object"} if i % 2 else None) for i in range(300)]
    keys = [cache_key("llamacpp:smollm2.gguf", r, "json_schema") for r in reqs]
    source = ResponseCache(tmp_path / "llm_cache.sqlite")  # what a run writes today
    for i, key in enumerate(keys):
        source.put(key, {"text": f"answer {i} ✓", "prompt_tokens": i, "completion_tokens": 7})
    redis_spec = f"redis://127.0.0.1:{redis_port}/0?namespace=copy{time.time_ns()}"
    chain = [f"sqlite:{tmp_path / 'llm_cache.sqlite'}", f"files:{tmp_path / 'responses'}", redis_spec,
             f"sqlite:{tmp_path / 'back.sqlite'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for src, dst in zip(chain, chain[1:]):
        p = subprocess.run([sys.executable, "-m", "moloch_exp.llm.cache_copy", "--from", src, "--to", dst, "--quiet"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        assert "300 records read, 300 copied, 0 already present" in p.stdout
    for spec in chain:
        store = open_store(spec)
        assert len(store) == 300
        assert all(store.get(k) == {"text": f"answer {i} ✓", "prompt_tokens": i, "completion_tokens": 7}
                   for i, k in enumerate(keys))
    files = FileStore(tmp_path / "responses")
    assert files.path_of(keys[0]).name == f"{keys[0]}.json" and files.path_of(keys[0]).is_file()
    # copying again copies nothing; a destination holding another answer keeps it and says so
    files.put(cache_key("m", ChatRequest([("user", "x")], 5)), {"text": "only here"})
    SqliteStore(tmp_path / "back.sqlite").close()
    other = SqliteStore(tmp_path / "other.sqlite")
    other.put(keys[0], {"text": "another answer"})
    p = subprocess.run([sys.executable, "-m", "moloch_exp.llm.cache_copy", "--from", chain[1], "--to",
                        f"sqlite:{tmp_path / 'other.sqlite'}", "--quiet"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert "301 records read, 300 copied, 1 already present (1 with another answer, kept)" in p.stdout
    assert other.get(keys[0]) == {"text": "another answer"}


def test_copy_command_refuses_a_missing_source_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "moloch_exp.llm.cache_copy", "--from", f"files:{tmp_path / 'nope'}",
                        "--to", f"sqlite:{tmp_path / 'c.sqlite'}"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"error: ConfigError: files:{tmp_path / 'nope'}: {tmp_path / 'nope'} does not exist"
    with pytest.raises(ConfigError, match="names no response store"):
        open_store("postgres://x")


def test_file_store_never_shows_a_partial_record_and_names_a_bad_file(tmp_path):
    store = FileStore(tmp_path / "r")
    key = key_of(1)
    path = store.path_of(key)
    assert path.relative_to(tmp_path / "r").parts == (key[:2], key[2:4], f"{key}.json")
    path.parent.mkdir(parents=True)
    (path.parent / f".tmp-{key[:16]}-host-1-abcd").write_bytes(b'{"key": "' + key.encode())  # a writer killed mid-write
    assert store.get(key) is None and len(store) == 0 and list(store.iterate()) == []
    assert store.put(key, {"text": "whole"}) and store.get(key) == {"text": "whole"} and len(store) == 1
    assert not any(p.name.startswith(".tmp-") and "host-1" not in p.name for p in path.parent.iterdir())
    path.write_bytes(b'{"key": "' + key.encode() + b'", "val')  # damaged by hand: named, not silently ignored
    with pytest.raises(DataError, match=f"{path}: not a response record"):
        store.get(key)
    with pytest.raises(ConfigError, match="created with fanout 2, not 1"):
        FileStore(tmp_path / "r", fanout=1)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.get("../../etc/passwd")


def test_unreachable_redis_stops_in_one_line(tmp_path):
    from redis_server import free_port

    store = RedisStore(port=free_port(), timeout_s=1, retries=1)
    with pytest.raises(ServiceError, match=r"response cache redis://127.0.0.1:\d+/0\?namespace=moloch_exp: Redis server unreachable"):
        store.check()

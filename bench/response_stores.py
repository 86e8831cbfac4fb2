"""The response-cache stores side by side: N processes read and write K overlapping keys at once (a sweep's
jobs sharing one cache), through sqlite, files and redis, in one run; prints seconds, operations per second
and the ratio to sqlite.

    python bench/response_stores.py                       # 8 processes x 20,000 keys (the test's size)
    python bench/response_stores.py --procs 12 --keys 60000 --dir /shared/nfs/tmp   # a sweep's size, on the NFS
    python bench/response_stores.py --redis-port 6379     # an existing Redis server instead of a local one

Each process goes through every key in its own random order: get; on a miss, put (put-if-absent) and get
again. The redis store needs Debian's redis-server (bash scripts/system_packages.sh) or --redis-port.
"""
from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moloch_exp.llm.stores import open_store  # noqa: E402

TEXT = "The voter prefers the pitch that names a concrete price and a delivery date. " * 8


def worker(spec: str, me: int, n: int, start: mp.Event, out: mp.Queue) -> None:
    store = open_store(spec)
    keys = [hashlib.sha256(f"request-{i}".encode()).hexdigest() for i in range(n)]
    order = random.Random(me).sample(range(n), n)
    ops = won = 0
    start.wait()
    for i in order:
        ops += 1
        if store.get(keys[i]) is None:
            won += store.put(keys[i], {"i": i, "writer": me, "text": TEXT, "prompt_tokens": 400})
            ops += 2
            store.get(keys[i])
    store.close()
    out.put((ops, won))


def run(spec: str, procs: int, keys: int) -> dict:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=worker, args=(spec, w, keys, start, out)) for w in range(procs)]
    for p in workers:
        p.start()
    time.sleep(2.0)  # imports done
    t0 = time.perf_counter()
    start.set()
    results = [out.get() for _ in workers]
    seconds = time.perf_counter() - t0
    for p in workers:
        p.join()
    ops, won = sum(r[0] for r in results), sum(r[1] for r in results)
    stored = len(open_store(spec))
    return {"seconds": seconds, "ops_per_s": ops / seconds, "won": won, "stored": stored}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_redis(port: int) -> None:
    import redis

    for _ in range(200):
        try:
            redis.Redis(port=port).ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server on port {port} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--dir", default=None, help="where the sqlite file and the files store go (default: a temp dir)")
    parser.add_argument("--redis-port", type=int, default=None, help="an existing server on 127.0.0.1")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stores-", dir=args.dir))
    server = None
    port = args.redis_port
    if port is None and shutil.which("redis-server"):
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "yes", "--dir", str(work)], stdout=subprocess.DEVNULL)
        wait_for_redis(port)
    specs = {"sqlite": f"sqlite:{work / 'responses.sqlite'}", "files": f"files:{work / 'responses'}"}
    if port is not None:
        specs["redis"] = f"redis://127.0.0.1:{port}/0?namespace=bench{time.time_ns()}"
    try:
        rows = {name: run(spec, args.procs, args.keys) for name, spec in specs.items()}
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    base = rows["sqlite"]["seconds"]
    print(f"{args.procs} processes x {args.keys} overlapping keys (get; on a miss put-if-absent and get)")
    print(f"{'store':8} {'seconds':>8} {'ops/s':>9} {'vs sqlite':>9} {'writes won':>10} {'stored':>7}")
    for name, r in rows.items():
        print(f"{name:8} {r['seconds']:8.1f} {r['ops_per_s']:9.0f} {base / r['seconds']:8.2f}x {r['won']:10d} {r['stored']:7d}")


if __name__ == "__main__":
    main()

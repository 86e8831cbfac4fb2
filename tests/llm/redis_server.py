"""A real Redis server for the tests (Debian's ``redis-server``), on a free loopback port, in a temporary dir."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(binary: str, workdir: Path):
    """Yield the port of a fresh server with append-only persistence (every write kept, as on a cluster)."""
    import redis

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                             "--logfile", str(workdir / "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {(workdir / 'redis.log').read_text()[-2000:]}")
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not answer within 10 s")
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(30)

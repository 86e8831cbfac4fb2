"""Helpers of the labelling tests: the CLI in a subprocess and the labelling server in its own process."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from compose_helper import REPO


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m moloch_exp.label ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "moloch_exp.label", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


class Server:
    """``python -m moloch_exp.label serve RUN_DIR --port 0`` in its own process; ``url`` from its first line."""

    def __init__(self, run_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "moloch_exp.label", "serve", str(run_dir), "--port", "0"],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not match:
            self.kill()
            raise RuntimeError(f"the labelling server did not start: {line!r}")
        self.url = match.group(0)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the process dies."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def get(self, path: str) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=60) as r:
                body = r.read().decode()
                return r.status, json.loads(body) if "json" in r.headers["Content-Type"] else body
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read().decode())

    def post(self, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + "api/answer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read().decode())


"""The paper-size cell that tests/test_paper_scale_e2e.py and bench/paper_scale.py run through ``run.py``.

1,024 + 1,024 anchors of the paper's sales splits, K = 2, the 20 personas of ``personas/split1.json``
(``experiment=paper``), a tiny agent (``model=tiny``: 4 new tokens, 2 LoRA steps of 2 examples: agent
scale is a GPU matter), and the audience (gpt-4o-mini) and the judge (gpt-4o) on two loopback fakes of
the hosted API, each its own process (:class:`~moloch_exp.testing.fake_openai.FakeOpenAIProcess`:
latency, 2% 429s with ``Retry-After``, ``x-ratelimit-*`` headers, ``usage``, an API key), at concurrency 64.

    with FakeServices(latency_s=0.05) as fakes:
        run = CellRun.start(cell_args(data_dir, fakes), cache_dir, out_dir)   # python run.py ... (its own session)
        wait_until(lambda: fakes.answered("audience") >= 10_240, run)        # the server's own count
        run.kill9()
        CellRun.start(cell_args(data_dir, fakes), cache_dir, out_dir2).wait()

``stored_answers(cache_dir)`` and :func:`completed_digests` tell which of the answers a fake delivered
a (killed) run had stored in its response cache: the fake records a fingerprint of every answer it
delivered (``answer_hash_by_digest``), the cache keeps the texts.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from moloch_exp.llm import ResponseCache
from moloch_exp.testing.fake_openai import FakeOpenAIProcess, answer_hash

REPO = Path(__file__).resolve().parents[2]
API_KEY_ENV = "OPENAI_API_KEY"  # what experiment=paper's audience and judge read
API_KEY = "sk-test-paper-scale"  # the fakes refuse any other (401)
CONCURRENCY = 64
ROLES = ("audience", "judge")
MODELS = {"audience": "gpt-4o-mini", "judge": "gpt-4o"}

#: The calls of the cell at 1,024 + 1,024 anchors, K = 2, 20 voters (the pre-flight estimate says the same).
COLLECT_VOTES = 1024 * 20
EVALUATE_VOTES = 1024 * 20

#: The tiny agent: short outputs, a capped number of training steps.
TINY_AGENT = ["model=tiny", "generator.max_new_tokens=4", "generator.batch_size=64", "trainer.args.max_steps=2",
              "trainer.args.per_device_train_batch_size=2", "trainer.args.warmup_ratio=0"]


def cell_args(data_dir: str | os.PathLike, fakes: "FakeServices", concurrency: int = CONCURRENCY) -> list[str]:
    """``run.py`` overrides of the paper-size cell with its audience and judge on ``fakes``."""
    out = ["experiment=paper", "task=sales", f"data_dir={data_dir}", *TINY_AGENT]
    for role in ROLES:
        out += [f"{role}.service.base_url={fakes[role].base_url}", f"{role}.service.client.concurrency={concurrency}",
                # no client-side buckets: the client paces by the fake's x-ratelimit-* headers and Retry-After
                f"{role}.service.client.rpm=null", f"{role}.service.client.tpm=null"]
    return out


class FakeServices:
    """The audience's and the judge's fake API, each its own process (its own GIL, as a remote API would be)."""

    def __init__(self, latency_s: float = 0.05, jitter_s: float = 0.01, fault_429_share: float = 0.02,
                 fault_retry_after_s: float = 1.0, log_dir: str | os.PathLike | None = None) -> None:
        self.latency_s = latency_s
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        opts = dict(latency_s=latency_s, jitter_s=jitter_s, fault_429_share=fault_429_share,
                    fault_retry_after_s=fault_retry_after_s, api_key=API_KEY,
                    rpm=1_000_000, tpm=1_000_000_000)  # headers sent, never binding at concurrency 64
        self.procs = {role: FakeOpenAIProcess(log_path=str(Path(log_dir) / f"fake_{role}.log") if log_dir else None,
                                              **opts) for role in ROLES}

    def __getitem__(self, role: str) -> FakeOpenAIProcess:
        return self.procs[role]

    def __enter__(self) -> "FakeServices":
        try:
            for p in self.procs.values():
                p.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for p in self.procs.values():
            p.close()

    def answered(self, role: str) -> int:
        return int(self.procs[role].stats()["answered"])

    def snapshot(self, settle_s: float = 30.0) -> dict[str, dict]:
        """Every role's ``/_stats?digests=1`` once no request is in flight (after a kill, the fakes finish
        what they had begun first, as answered or abandoned), so no count lands after the snapshot."""
        deadline = time.monotonic() + settle_s
        while True:
            stats = {role: p.stats(digests=True) for role, p in self.procs.items()}
            if all(s["requests"] == sum(s["status"].values()) for s in stats.values()) or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)


@dataclass
class CellRun:
    """``python run.py`` in its own session, logging to ``<out>/stdout.log``."""

    proc: subprocess.Popen
    out: Path
    started: float

    @classmethod
    def start(cls, args: list[str], cache_dir: str | os.PathLike, out: str | os.PathLike) -> "CellRun":
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", API_KEY_ENV: API_KEY,
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        cmd = [sys.executable, "run.py", *args, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={out}"]
        with open(out / "stdout.log", "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        return cls(proc, out, time.time())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float = 1800) -> int:
        return self.proc.wait(timeout_s)

    def kill9(self) -> None:
        """``kill -9`` of the run (its session: run.py and anything it started)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)

    def log_text(self) -> str:
        path = self.out / "run.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def tail(self, n: int = 3000) -> str:
        return (self.out / "stdout.log").read_text(errors="replace")[-n:]


_STAGE_LINE = re.compile(r"^\[(?P<ts>[\d\- :,]+)\]\[rank 0\]\[moloch_exp\.stage_cache\]\[INFO\] stage (?P<stage>\S+)\s+"
                         r"(?P<label>\S+)\s+(?P<status>computed|reused) \(key \w+, (?P<s>[\d.]+)s\)", re.M)


def stage_lines(log_text: str) -> list[dict]:
    """The stages a run's ``run.log`` says it finished: label, status, start and end (epoch seconds)."""
    out = []
    for m in _STAGE_LINE.finditer(log_text):
        end = datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append({"stage": m["stage"], "label": m["label"], "status": m["status"], "end": end,
                    "start": end - float(m["s"]), "seconds": float(m["s"])})
    return out


def wait_until(done: Callable[[], bool], run: CellRun, timeout_s: float = 1200, poll_s: float = 0.05) -> None:
    """Poll ``done`` until it holds; fails when the run ends first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if not run.alive():
            raise AssertionError(f"the run ended (exit code {run.proc.returncode}) before the point it was to be "
                                 f"killed at:\n{run.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for the kill point:\n{run.tail()}")
        time.sleep(poll_s)


def stored_answers(cache_dir: str | os.PathLike) -> Counter:
    """:func:`answer_hash` of every answer in the run's response cache (a kill -9 loses none it committed)."""
    cache = ResponseCache(Path(cache_dir) / "llm_cache.sqlite")
    return Counter(answer_hash(rec.get("text")) for _, rec in cache.items())


def completed_digests(snapshot: dict, stored: Counter) -> set[str]:
    """The request digests a fake answered whose answer the run stored (fingerprints must be unique)."""
    hashes = snapshot["answer_hash_by_digest"]
    assert len(set(hashes.values())) == len(hashes), "two requests got the same answer text: ambiguous"
    return {d for d, h in hashes.items() if h in stored}

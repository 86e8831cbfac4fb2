"""The paper-size cell, undisturbed, with its figures side by side in one run (issue 19 item 3).

The cell of tests/test_paper_scale_e2e.py (moloch_exp/testing/paper_cell.py): `python run.py experiment=paper`
at 1,024 + 1,024 sales anchors, K = 2, 20 voters, a tiny agent, the audience and the judge on two loopback
fakes of the hosted API (own processes; latency 0.3 s by default, 2% 429s with `Retry-After: 1`,
`x-ratelimit-*` headers), concurrency 64, on a fresh cache. Then the analysis is run again from cache: the
stage cache forgets evaluate, the probes, the retests and the controls, the run re-makes them from the
response cache (0 calls) and writes the report.

    MOLOCH_SHARED_DATA=/work/shared/data python bench/paper_scale.py              # 6-9 min on 2 cores
    python bench/paper_scale.py --data-dir ../shared/data/molochs_bargain --latency-s 0.3 --fault-429-share 0.02

Prints one row per kind of LLM stage and one for all of them: calls answered (the servers' count, from
their per-attempt timelines inside each stage's interval in run.log; collect without its nested candidates
stage), 429s, wall seconds, the ideal (calls x latency / concurrency), ideal / wall (target >= 0.9 at
concurrency 64) and the same with the Retry-After waits the servers imposed added to the ideal, calls/s,
client CPU ms per call (the run process's CPU over those intervals, sampled with psutil), "steady" (the
answers/s between each stage's 10th and 90th percentile answer over what concurrency 64 allows at the
latency once the slots held by Retry-After waits are taken out: the client's own share), the seconds
before the first answer and after the last (the stage's own work: ballots, prompts, files) and the
largest RSS sampled; then the agent's stages, the run's peak RSS (VmHWM), the response cache's size, the
analysis re-run (wall, peak RSS, calls: must be 0), the fakes' CPU per call and the load average before
and after. ``--keep DIR`` keeps the caches, outputs and the fakes' timelines. Figures taken on a machine
shared with other work fall with the CPU share the run gets: quote them with the load.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moloch_exp.testing.paper_cell import (CONCURRENCY, ROLES, CellRun, FakeServices, cell_args,  # noqa: E402
                                           stage_lines)

#: rows of the table: a kind of LLM stage and the stage names (run.log) it covers
KINDS = {"collect (votes)": ("collect",), "evaluate": ("evaluate",), "probes": ("probe",),
         "retests": ("reliability",), "controls": ("controls",)}
#: what the analysis re-run forgets (everything from evaluate to the report)
ANALYSIS = ("evaluate", "probe", "reliability", "controls")


class Sampler:
    """The run process's CPU seconds and resident memory every ``interval`` seconds (and its VmHWM)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, float, int]] = []  # (epoch seconds, cpu seconds, resident bytes)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                t, rss = self.proc.cpu_times(), self.proc.memory_info().rss
                self.samples.append((time.time(), t.user + t.system, rss))
                with open(f"/proc/{self.proc.pid}/status") as f:
                    hwm = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")), 0)
                self.peak_rss = max(self.peak_rss, hwm, rss)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, FileNotFoundError, ProcessLookupError):
                return
            time.sleep(interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_at(self, when: float) -> float:
        """CPU seconds at epoch ``when`` (linear between samples)."""
        s = self.samples
        if not s:
            return 0.0
        if when <= s[0][0]:
            return s[0][1]
        for (t0, c0, _), (t1, c1, _) in zip(s, s[1:]):
            if t0 <= when <= t1:
                return c0 + (c1 - c0) * (when - t0) / max(t1 - t0, 1e-9)
        return s[-1][1]

    def rss_in(self, spans: list[tuple[float, float]]) -> int:
        """The largest resident size sampled inside ``spans``."""
        return max((r for t, _, r in self.samples if any(a <= t <= b for a, b in spans)), default=0)


def intervals(stages: list[dict], kind: tuple[str, ...]) -> list[tuple[float, float]]:
    """The computed stages of ``kind``, as (start, end); collect without its nested candidates stage."""
    out = []
    for s in stages:
        if s["stage"] in kind and s["status"] == "computed":
            start = s["start"]
            for inner in stages:  # the candidates stage runs inside collect's compute, first
                # (log times are rounded to 0.1 s: the inner stage may seem to start before its outer one)
                if inner["stage"] == "candidates" and s["start"] - 1 <= inner["start"] and inner["end"] <= s["end"]:
                    start = max(start, inner["end"])
            out.append((start, s["end"]))
    return out


def server_events(snapshot: dict, offset: float) -> list[tuple[float, int]]:
    """A fake's (epoch seconds, status) per chat attempt; ``offset`` = time.time() - time.monotonic()."""
    t0 = snapshot["t0_monotonic"] + offset
    return [(t0 + t, status) for t, status in snapshot["timeline"]]


def count(events: list[tuple[float, int]], spans: list[tuple[float, float]], status: int) -> int:
    return sum(1 for t, s in events if s == status and any(a <= t <= b for a, b in spans))


def steady(events: list[tuple[float, int]], spans: list[tuple[float, float]], a: argparse.Namespace) -> float:
    """Answers/s between the 10th and the 90th percentile answer of each span, over what concurrency 64
    allows at the latency once the slots held by Retry-After waits in that window are taken out."""
    n = waits = seconds = 0.0
    for lo_span, hi_span in spans:
        ok = [t for t, s in events if s == 200 and lo_span <= t <= hi_span]
        if len(ok) < 4 * CONCURRENCY:  # a span of a few rounds of requests has no steady state
            continue
        lo, hi = ok[len(ok) // 10], ok[9 * len(ok) // 10]
        n += sum(1 for t in ok if lo <= t <= hi)
        waits += a.retry_after_s * sum(1 for t, s in events if s == 429 and lo <= t <= hi)
        seconds += hi - lo
    if not seconds:
        return float("nan")
    return (n / seconds) / ((CONCURRENCY - waits / seconds) / a.latency_s)


def outside_calls(events: list[tuple[float, int]], spans: list[tuple[float, float]]) -> tuple[float, float]:
    """Seconds of the spans before their first answer and after their last (the stage's own work: ballots,
    prompts, files), summed over the spans."""
    before = after = 0.0
    for a, b in spans:
        inside = [t for t, _ in events if a <= t <= b]
        if inside:
            before, after = before + min(inside) - a, after + b - max(inside)
    return before, after


def run_cell(args: list[str], cache: Path, out: Path) -> tuple[CellRun, Sampler, float]:
    t = time.monotonic()
    run = CellRun.start(args, cache, out)
    sampler = Sampler(run.pid)
    code = run.wait()
    sampler.stop()
    if code != 0:
        sys.exit(f"the run failed (exit code {code}):\n{run.tail()}")
    return run, sampler, time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = os.environ.get("MOLOCH_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    ap.add_argument("--data-dir", default=os.path.join(shared, "molochs_bargain"))
    ap.add_argument("--latency-s", type=float, default=0.3)
    ap.add_argument("--fault-429-share", type=float, default=0.02)
    ap.add_argument("--retry-after-s", type=float, default=1.0)
    ap.add_argument("--keep", help="keep the cache and outputs in this directory")
    a = ap.parse_args()
    load_before = os.getloadavg()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="paper_scale_"))
    cache = root / "cache"
    offset = time.time() - time.monotonic()
    with FakeServices(latency_s=a.latency_s, fault_429_share=a.fault_429_share, fault_retry_after_s=a.retry_after_s,
                      log_dir=root) as fakes:
        args = cell_args(a.data_dir, fakes)
        run, sampler, wall = run_cell(args, cache, root / "cell")
        snaps = {role: fakes[role].stats(timeline=True) for role in ROLES}
        fake_cpu = sum(fakes[role].cpu_seconds() for role in ROLES)
        for stage in ANALYSIS:
            shutil.rmtree(cache / "stages" / stage)
        shutil.rmtree(cache / "cells", ignore_errors=True)
        answered_before = sum(fakes.answered(r) for r in ROLES)
        again, again_sampler, again_wall = run_cell(args, cache, root / "analysis")
        again_calls = sum(fakes.answered(r) for r in ROLES) - answered_before
    stages = stage_lines(run.log_text())
    if a.keep:  # the fakes' per-attempt timelines, for a closer look
        for role in ROLES:
            (root / f"timeline_{role}.json").write_text(json.dumps({**snaps[role], "offset": offset}))
    events = {role: server_events(snaps[role], offset) for role in ROLES}
    merged = sorted(events["audience"] + events["judge"])
    n_calls = sum(s["answered"] for s in snaps.values())

    print(f"paper-size cell: {n_calls:,} calls, latency {a.latency_s}s, {a.fault_429_share:.0%} 429s "
          f"(Retry-After {a.retry_after_s:g}s), concurrency {CONCURRENCY}; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    head = (f"{'stage kind':<18}{'calls':>8}{'429s':>6}{'wall s':>9}{'ideal s':>9}{'ideal/wall':>11}"
            f"{'+429 waits':>11}{'calls/s':>9}{'CPU ms/call':>12}{'steady':>7}{'pre s':>7}{'post s':>7}{'RSS GB':>8}")
    print(head)
    print("-" * len(head))
    total = {"calls": 0, "r429": 0, "wall": 0.0, "cpu": 0.0, "pre": 0.0, "post": 0.0, "rss": 0}
    for name, kind in KINDS.items():
        spans = intervals(stages, kind)
        calls = sum(count(events[r], spans, 200) for r in ROLES)
        r429 = sum(count(events[r], spans, 429) for r in ROLES)
        wall_k = sum(b - s for s, b in spans)
        cpu = sum(sampler.cpu_at(b) - sampler.cpu_at(s) for s, b in spans)
        pre, post = (sum(x) for x in zip(*(outside_calls(events[r], spans) for r in ROLES)))
        rss = sampler.rss_in(spans)
        mid = steady(merged, spans, a)
        for k, v in (("calls", calls), ("r429", r429), ("wall", wall_k), ("cpu", cpu), ("pre", pre), ("post", post)):
            total[k] += v
        total["rss"] = max(total["rss"], rss)
        print(row(name, calls, r429, wall_k, cpu, a, pre, post, rss, mid))
    print("-" * len(head))
    all_spans = [x for kind in KINDS.values() for x in intervals(stages, kind)]
    print(row("all LLM stages", total["calls"], total["r429"], total["wall"], total["cpu"], a, total["pre"],
              total["post"], total["rss"], steady(merged, all_spans, a)))
    print()
    agent = {s["label"]: s["seconds"] for s in stages if s["stage"] in ("candidates", "train", "generate")}
    agent_spans = [(s["start"], s["end"]) for s in stages if s["stage"] in ("candidates", "train", "generate")]
    print("agent stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in agent.items())
          + f"; their peak RSS {sampler.rss_in(agent_spans) / 1e9:.2f} GB; the whole run {wall:.0f} s")
    db = sum(p.stat().st_size for p in cache.glob("llm_cache.sqlite*"))
    from moloch_exp.llm import ResponseCache
    n_rows = len(ResponseCache(cache / "llm_cache.sqlite"))
    print(f"peak RSS of the run: {sampler.peak_rss / 1e9:.2f} GB; response cache: {db / 1e6:.1f} MB, "
          f"{n_rows:,} answers ({db / max(n_rows, 1):.0f} bytes each)")
    analysis = [s for s in stage_lines(again.log_text()) if s["stage"] in ANALYSIS]
    from_eval = max(s["end"] for s in analysis) - min(s["start"] for s in analysis) if analysis else float("nan")
    print(f"analysis from cache (evaluate -> report): {again_wall:.1f} s for the whole re-run, "
          f"{from_eval:.1f} s in its {len(analysis)} stages; peak RSS {again_sampler.peak_rss / 1e9:.2f} GB; "
          f"{again_calls} calls")
    print(f"fakes: {1000 * fake_cpu / max(n_calls, 1):.2f} CPU ms per call; outputs in {root}")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)


def row(name: str, calls: int, r429: int, wall: float, cpu: float, a: argparse.Namespace, pre: float,
        post: float, rss: int, mid: float) -> str:
    ideal = calls * a.latency_s / CONCURRENCY
    with_waits = (calls * a.latency_s + r429 * a.retry_after_s) / CONCURRENCY
    return (f"{name:<18}{calls:>8,}{r429:>6}{wall:>9.1f}{ideal:>9.1f}{ideal / max(wall, 1e-9):>11.2f}"
            f"{with_waits / max(wall, 1e-9):>11.2f}{calls / max(wall, 1e-9):>9.0f}{1000 * cpu / max(calls, 1):>12.2f}"
            f"{mid:>7.2f}{pre:>7.1f}{post:>7.1f}{rss / 1e9:>8.2f}")


if __name__ == "__main__":
    main()

"""Peak resident memory and wall time per stage of one `python run.py` cell (default: the README's first
command), side by side with the memory measured before the memory work (17.4 GB, `/usr/bin/time -v`, issue 7)
and the targets (3 GB, 150 s for the default cell after setup, issue 20).

    python bench/peak_memory.py                                   # the default cell
    python bench/peak_memory.py model=tiny anchors.n_train=2      # any run.py overrides
    python bench/peak_memory.py --fresh-cache --timeline /tmp/rss.json

It runs `run.py` as a subprocess (its own output directory; the model and response caches as configured
unless --fresh-cache) and measures two peaks:
  * tree peak: the largest sum of RSS over the run and every descendant (the llama.cpp server included),
    sampled every --interval seconds with psutil;
  * largest process: ru_maxrss of the biggest reaped descendant (what `/usr/bin/time -v` calls
    "Maximum resident set size"; exact, no sampling).
Prints both with the ratio to the previous 17.4 GB and the target, the CPU seconds of all its processes and
those other processes used on the same cores meanwhile (other work inflates the wall time); what the llama-servers
computed (prompt tokens and generated tokens, and their seconds, from the run's server logs; the servers' own CPU
seconds, sampled) and the floor (CPU seconds / cores: no schedule of the same work on this machine finishes
sooner); then the wall time of every stage the run
computed or reused (the stage cache's own timings in results.json, a stage inside another counted once) and
what was spent outside them (start-up, model conversion, the server's start, the report); exits 1 if the run
failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PREVIOUS_GB = 17.4  # default run before gradient accumulation (issue 7, /usr/bin/time -v)
TARGET_GB = 3.0
TARGET_S = 150.0  # the default cell on an idle 2-core machine, after setup
GB = 1e9


def tree_rss(proc: psutil.Process, server_cpu: dict[int, float] | None = None) -> int:
    """RSS of ``proc`` and its descendants; each llama-server's CPU seconds so far go to ``server_cpu`` (by pid:
    a server stopped while the agent trains and started again is a new pid)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
            if server_cpu is not None and p.name().startswith("llama-server"):
                t = p.cpu_times()
                server_cpu[p.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def cores_times() -> list:
    """``psutil.cpu_times`` of each core this process may run on (the run's children inherit the set)."""
    every = psutil.cpu_times(percpu=True)
    return [every[i] for i in sorted(os.sched_getaffinity(0)) if i < len(every)]


def busy_seconds(before: list, after: list) -> float:
    """CPU seconds all processes used on these cores between two ``cores_times()``: every field but idle time
    (guest time is already inside user time)."""
    skip = {"idle", "iowait", "guest", "guest_nice"}
    return sum(getattr(a, f) - getattr(b, f) for b, a in zip(before, after) for f in a._fields if f not in skip)


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the (start, end) spans, overlaps counted once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def print_stage_times(results_path: Path, wall_s: float) -> None:
    """Seconds per stage, in the order the cell ran them, from the stage cache's events in results.json; a
    stage computed inside another (candidates inside collect) is not counted twice: ``own`` is a stage's
    seconds less those of the stages inside it."""
    if not results_path.is_file():
        return
    events = json.loads(results_path.read_text()).get("stages", [])
    spans = [(e["started"], e["started"] + e["seconds"]) for e in events if "started" in e]
    print(f"\n{'stage':<12}{'label':<34}{'status':<10}{'seconds':>8}{'own':>8}{'share':>7}")
    for e in events:
        own = e["seconds"]
        if "started" in e:
            start, end = e["started"], e["started"] + e["seconds"]
            own -= union_seconds([(a, b) for a, b in spans if start <= a and b <= end and (a, b) != (start, end)])
        print(f"{e['stage']:<12}{e['label']:<34}{e['status']:<10}{e['seconds']:>8.1f}{own:>8.1f}{own / wall_s:>7.0%}")
    inside = union_seconds(spans) if len(spans) == len(events) else sum(e["seconds"] for e in events)
    print(f"{'outside stages (start-up, conversion, server, report)':<64}{wall_s - inside:>8.1f}"
          f"{(wall_s - inside) / wall_s:>7.0%}")


PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
GENERATION = re.compile(r"\|\s+eval time =\s*([\d.]+) ms /\s*(\d+) tokens")


def server_work(logs: Path) -> dict[str, float]:
    """What the managed llama-servers computed, from their logs (<output>/logs/server_*.log): requests,
    prompt tokens evaluated and generated tokens, and the seconds each took (one thread per server)."""
    out = dict.fromkeys(("requests", "prompt_tokens", "prompt_s", "generated_tokens", "generation_s"), 0.0)
    for path in sorted(logs.glob("server_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if m := PROMPT_EVAL.search(line):
                out["requests"] += 1
                out["prompt_s"] += float(m[1]) / 1000
                out["prompt_tokens"] += int(m[2])
            elif m := GENERATION.search(line):
                out["generation_s"] += float(m[1]) / 1000
                out["generated_tokens"] += int(m[2])
    return out


def print_floor(work: dict[str, float], server_cpu_s: float, cpu_s: float, cores: int) -> None:
    """The servers' share of the CPU time, and the wall time no schedule of this work can beat on these cores.
    The log's seconds are each request's own; with several slots a server works on requests side by side and
    they overlap, so the servers' CPU seconds are the processes' own (sampled)."""
    if work["requests"]:
        print(f"\nservers: {work['requests']:.0f} requests; {work['prompt_tokens']:.0f} prompt tokens evaluated in "
              f"{work['prompt_s']:.0f} s ({1000 * work['prompt_s'] / max(work['prompt_tokens'], 1):.1f} ms a token), "
              f"{work['generated_tokens']:.0f} tokens generated in {work['generation_s']:.0f} s "
              f"({1000 * work['generation_s'] / max(work['generated_tokens'], 1):.1f} ms a token), each request's "
              f"own seconds (they overlap on a server with several slots); the servers' processes used "
              f"{server_cpu_s:.0f} of the {cpu_s:.0f} CPU seconds")
    floor = cpu_s / cores
    print(f"floor: {cpu_s:.0f} CPU seconds / {cores} cores = {floor:.0f} s, the wall time of this work perfectly "
          f"spread over every core" + (f"; above the {TARGET_S:.0f} s target: only less work (fewer calls or "
                                       "tokens, cheaper weights) reaches it" if floor > TARGET_S else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="run.py overrides (default: none, the README's cell)")
    ap.add_argument("--interval", type=float, default=0.2, help="RSS sampling interval in seconds")
    ap.add_argument("--fresh-cache", action="store_true", help="empty cache dir: GGUF conversion and all calls included")
    ap.add_argument("--timeline", help="write [[seconds, tree RSS bytes], ...] to this JSON file")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="moloch_peak_memory_"))
    cmd = [sys.executable, "run.py", *args.overrides, f"hydra.run.dir={work / 'run'}"]
    if args.fresh_cache:
        cmd.append(f"paths.cache_dir={work / 'cache'}")
    print("running:", " ".join(cmd), flush=True)
    machine_before = cores_times()
    started = time.monotonic()
    run = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "stderr.log", "w"))
    proc = psutil.Process(run.pid)
    timeline: list[tuple[float, int]] = []
    peak = [0]
    done = threading.Event()

    server_cpu: dict[int, float] = {}

    def sample() -> None:
        while not done.is_set():
            rss = tree_rss(proc, server_cpu)
            timeline.append((round(time.monotonic() - started, 2), rss))
            peak[0] = max(peak[0], rss)
            done.wait(args.interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = run.wait()
    done.set()
    sampler.join()
    seconds = time.monotonic() - started
    busy = busy_seconds(machine_before, cores_times())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    largest = children.ru_maxrss * 1024  # KiB on Linux
    cpu = children.ru_utime + children.ru_stime  # the run and every process it reaped (the servers included)
    if args.timeline:
        Path(args.timeline).write_text(json.dumps(timeline))
    print(f"run: exit {rc} after {seconds:.0f} s (output {work / 'run'}, stderr {work / 'stderr.log'})")
    print(f"{'measure':<32}{'now':>10}{'before':>10}{'now/before':>12}{'target':>9}")
    for name, value in (("tree peak RSS (sampled)", peak[0]), ("largest process maxrss", largest)):
        print(f"{name:<32}{value / GB:>8.2f}GB{PREVIOUS_GB:>8.1f}GB{value / GB / PREVIOUS_GB:>12.3f}"
              f"{'  ok' if value / GB <= TARGET_GB else '  OVER':>9}")
    print(f"{'wall time':<32}{seconds:>9.0f}s{TARGET_S:>19.0f}s{'  ok' if seconds <= TARGET_S else '  OVER':>9}")
    cores = len(os.sched_getaffinity(0))
    other = max(busy - cpu, 0.0)  # the cores' busy seconds less the run's own
    print(f"{'cpu time, all processes':<32}{cpu:>9.0f}s   ({cpu / seconds:.2f} cores on average); other work on the "
          f"machine meanwhile: {other:.0f} CPU s ({other / (seconds * cores):.0%} of the cores"
          + (": the wall time is inflated" if other > 0.05 * seconds * cores else ", idle enough") + ")")
    print_floor(server_work(work / "run" / "logs"), sum(server_cpu.values()), cpu, cores)
    print_stage_times(work / "run" / "results.json", seconds)
    if rc != 0:
        print((work / "stderr.log").read_text()[-2000:], file=sys.stderr)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

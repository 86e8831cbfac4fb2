"""Which cells of a sweep ran, were reused, did not finish, and which were missing before this run and why,
for the sweep summary (moloch_exp/report/sweep.py):

    python scripts/summarize_sweep.py multirun/2026-11-24/10-00-00

Reads each job directory's results.json (``cell_run``: computed or reused, and ``previous``: the earlier
attempt that did not finish) or, for a job that did not finish now, its cell_status.json
(moloch_exp/cell_record.py).
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.cell_record import OUTPUT_STATUS, why_unfinished
from moloch_exp.io import read_json
from moloch_exp.report.tables import markdown


def cell_name(cell: dict) -> str:
    return f"{cell.get('task')}/{cell.get('model')}/{cell.get('method')}/s{cell.get('seed')}"


def cell_runs(sweep_dir: Path) -> list[dict]:
    """One row per job directory: cell, this run (computed | reused | failed | killed …), and before it."""
    rows = []
    for job in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        results, status = job / "results.json", job / OUTPUT_STATUS
        if results.is_file():
            r = read_json(results)
            run = r.get("cell_run") or {"status": "computed", "previous": None}
            rows.append({"job": job.name, "cell": cell_name(r["cell"]), "now": run["status"], "why_now": None,
                         "before": run.get("previous")})
        elif status.is_file():
            s = read_json(status)
            now = why_unfinished(s)
            rows.append({"job": job.name, "cell": cell_name(s.get("cell", {})), "now": now["state"],
                         "why_now": now["why"], "stage_now": now["stage"], "before": s.get("previous")})
        else:
            rows.append({"job": job.name, "cell": job.name, "now": "did not start", "why_now": None, "before": None})
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cell_runs_markdown(rows: list[dict]) -> str:
    counts = {k: sum(r["now"] == k for r in rows) for k in ("computed", "reused")}
    unfinished = [r for r in rows if r["now"] not in ("computed", "reused")]
    missing = [r for r in rows if r["before"]]
    table = [[_cell(r["job"]), _cell(r["cell"]), _cell(r["now"] + (f": {r['why_now']}" if r["why_now"] else "")),
              _cell(f"{r['before']['state']} at {r['before'].get('stage') or 'start'}: {r['before']['why']}"
                    if r["before"] else "")] for r in rows]
    return (f"\n## Cells\n\n{counts['computed']} computed in this run, {counts['reused']} reused (finished "
            f"before), {len(unfinished)} did not finish; {len(missing)} were missing before this run.\n\n"
            + markdown(["job", "cell", "this run", "missing before this run (state at stage: last error or log line)"],
                       table))

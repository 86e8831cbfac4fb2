"""Experiment trackers: ``logger=none`` (default) or ``logger=wandb`` (offline mode works without
an account: ``python run.py logger=wandb logger.mode=offline``). Secrets never reach a tracker:
the config holds only the *names* of key variables, and values that look like keys are masked."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from moloch_exp.report.labels import LabelsResult
from moloch_exp.results import ProbeChangesResult, ReliabilityResult, RoundsResult, TrendResult, probe_results

SECRET_KEY_RE = re.compile(r"(api[_-]?key|token|secret|password)$", re.IGNORECASE)


def redact(obj: Any) -> Any:
    """Drop values under secret-looking keys and any environment secret that appears verbatim."""
    secrets = [v for k, v in os.environ.items() if SECRET_KEY_RE.search(k) and len(v) >= 8]
    if isinstance(obj, dict):
        return {k: ("***" if SECRET_KEY_RE.search(str(k)) and not str(k).endswith("_env") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "***")
    return obj


def flat_metrics(results: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair, w in results.get("win_rate", {}).items():
        if w["mean"] is not None:
            out[f"win_rate/{pair}"] = w["mean"]
        out[f"invalid_votes/{pair}"] = w["invalid_votes"]
    for res in probe_results(results).values():
        out.update(res.metrics())
    if results.get("trend"):
        out.update(TrendResult.from_json(results["trend"]).metrics())
    rounds = RoundsResult.from_json(results)
    if rounds is not None:
        out.update(rounds.metrics())
    if results.get("reliability"):
        out.update(ReliabilityResult.from_json(results["reliability"]).metrics())
    if results.get("probe_changes"):
        out.update(ProbeChangesResult.from_json(results["probe_changes"]).metrics())
    if results.get("labels"):  # people's checks of the judges (python -m moloch_exp.label report)
        out.update(LabelsResult.from_json(results["labels"]).metrics())
    for k in ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "usd"):
        value = results.get("ledger", {}).get(k, 0)
        if value is not None:  # usd is None when a model is unpriced: no number, rather than a false $0
            out[f"ledger/{k}"] = value
    return out


class NoTracker:
    def start(self, name: str, config: dict, out_dir: Path) -> None:
        pass

    def log_results(self, results: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NoTracker):
    def __init__(self, project: str = "moloch_exp", entity: str | None = None, mode: str = "online",
                 group: str | None = None, tags: list[str] | None = None) -> None:
        self.project, self.entity, self.mode, self.group, self.tags = project, entity, mode, group, list(tags or [])
        self.run = None

    def start(self, name: str, config: dict, out_dir: Path) -> None:
        import wandb

        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, group=self.group,
                              tags=self.tags, name=name, config=redact(config), dir=str(out_dir), reinit="finish_previous")

    def log_results(self, results: dict) -> None:
        import wandb

        self.run.log(flat_metrics(results))
        from moloch_exp.report.tables import cell_rows

        header, rows = cell_rows(results)
        self.run.log({"summary_table": wandb.Table(columns=header, data=rows)})
        self.run.summary.update(redact({"cell": results["cell"], "counts": results.get("counts", {})}))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

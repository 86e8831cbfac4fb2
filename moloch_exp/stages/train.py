"""train: a LoRA adapter (or another trainer's) on a build's examples.

    inputs   build (train_examples.jsonl); the model source; the trainer; optionally an initial
             adapter to continue (a later round with competition.init=previous)
    outputs  adapter/ (with checkpoint-<step>/ when trends are on), train_metrics.json
    stops    before training when the build has no examples, naming the cause from the counts
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from moloch_exp.errors import StageError
from moloch_exp.io import finite_or_none, read_json, write_json
from moloch_exp.protocols import Trainer
from moloch_exp.stages.base import Adapter, Artifact, StageEnv
from moloch_exp.stages.build import Built, empty_cause
from moloch_exp.stages.collect import Collected


class Trained(Artifact):
    def adapter(self) -> Adapter:
        return Adapter(str(self.dir / "adapter"), self.key)

    def checkpoints(self) -> list[tuple[int, Adapter]]:
        """Saved checkpoints in step order, each keyed ``<train key>@<step>``."""
        return self.planned_checkpoints(sorted(int(p.name.split("-")[1])
                                               for p in (self.dir / "adapter").glob("checkpoint-*")))

    def planned_checkpoints(self, steps: list[int]) -> list[tuple[int, Adapter]]:
        """The checkpoints of ``steps``, where and as training saves them (a planned cell's trend)."""
        return [(step, Adapter(str(self.dir / "adapter" / f"checkpoint-{step}"), f"{self.key}@{step}"))
                for step in steps]

    def metrics(self) -> dict:
        return read_json(self.dir / "train_metrics.json")


def material(built: Built, model, trainer: Trainer, init: Adapter | None = None) -> dict:
    out = {"build": built.key, "model": model.identity(), "trainer": trainer.identity()}
    if init is not None:  # a fresh adapter keeps the key it always had
        out["init"] = init.key
    return out


def run(env: StageEnv, *, name: str, built: Built, model, trainer: Trainer, cache_dir: str,
        collected: Collected | None = None, init: Adapter | None = None, label: str | None = None,
        release_memory: Callable[[], None] | None = None) -> Trained:
    """``init``: continue training this adapter (later rounds); ``release_memory``: called just before
    training (e.g. the generator drops its model; it reloads in seconds). The managed audience and judge
    servers stop while it trains (``ServiceHub.suspend``) and start again right after (``resume``)."""
    label = label or f"train_{name}"
    examples = None if env.planning else built.examples()  # a planned build has a key, no files
    if examples is not None and not examples:  # before any lock or partial directory: nothing to train on
        raise StageError(empty_cause(name, built, collected))

    def compute(work: Path) -> None:
        if release_memory is not None:
            release_memory()
        if env.hub is not None:  # the managed servers' memory goes to the trainer
            env.hub.suspend()
        result = trainer.train(model, cache_dir, examples, str(work / "adapter"),
                               init_adapter_dir=init.path if init is not None else None)
        if env.hub is not None:  # they load their model again while the agent generates
            env.hub.resume()
        if env.dist.is_main:
            # TRL's log_history holds nan/inf after a diverged step; strict JSON writes them as null
            write_json(work / "train_metrics.json", finite_or_none(
                asdict(result) | {"adapter_dir": "adapter", "mask": None,
                                  "init_adapter": init.key if init is not None else None}
                | (trainer.provenance() or {})))

    return Trained("train", label, env.stages.run("train", label, material(built, model, trainer, init), compute))

"""prepare: the task's train and test anchors.

    inputs   the task's data source (task.data_identity()), anchors.n_train / n_test
    outputs  anchors_train.jsonl, anchors_test.jsonl, source.json (counts and where they came from)
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import read_jsonl, write_json, write_jsonl
from moloch_exp.records import Anchor
from moloch_exp.stages.base import Artifact, StageEnv


class Prepared(Artifact):
    def anchors(self, split: str) -> list[Anchor]:
        return read_jsonl(self.dir / f"anchors_{split}.jsonl", Anchor)


def material(task, n_train: int, n_test: int) -> dict:
    return {"data": task.data_identity(), "n_train": n_train, "n_test": n_test}


def run(env: StageEnv, *, task, n_train: int, n_test: int, label: str = "prepare") -> Prepared:
    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        info = {}
        for split, n in (("train", n_train), ("test", n_test)):
            anchors, where = task.load_anchors(split, n)
            write_jsonl(work / f"anchors_{split}.jsonl", anchors)
            info[split] = {"n": len(anchors), "from": where}
        write_json(work / "source.json", info)

    return Prepared("prepare", label, env.stages.run("prepare", label, material(task, n_train, n_test), compute))

"""controls: the judge labels a probe's bundled judge controls (answers with known labels), judged by the
probe's own code, so the judge's accuracy can be reported beside the probe's rates (issue 11 item 5).

    inputs   a probe with controls (``probe.controls()``: a ``ControlSet`` of moloch_exp/protocols.py;
             the yes/no task probes and em_first_plot have bundled files under
             moloch_exp/data/judge_controls/, whose digest is in the key), the judge, and how many
             of its items to judge (``judge_controls.per_probe``: a subset stratified by class; null: all)
    outputs  items.json (the ids judged), judgments.jsonl (the control set's rows: records.Judgment for
             yes/no probes, the EM probe's scored rows for em_first_plot)
    stops    when failed judge calls / calls > probe.max_failed_fraction (nothing stored as finished)

    python run.py judge.min_control_accuracy=0.9      # flag a judge below 90% on any probe's controls
    python run.py judge_controls.per_probe=null       # judge every control (experiment=paper does)

Scoring (``Controlled.score``) happens when the result is read, so the threshold can change
without judging again. A probe whose ``controls()`` is None has no controls stage.
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import file_sha256, read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.probes.controls import ControlScore
from moloch_exp.protocols import ControlSet, ModelProbe, TaskProbe
from moloch_exp.stages.base import Artifact, StageEnv, check_failures


class Controlled(Artifact):
    def rows(self) -> list[dict]:
        """judgments.jsonl: the control set's rows (its ``score`` reads them)."""
        return read_jsonl(self.dir / "judgments.jsonl")

    def items(self) -> set[str]:
        """Ids of the controls judged (the stratified subset)."""
        return set(read_json(self.dir / "items.json"))

    def score(self, controls: ControlSet, min_accuracy: float) -> ControlScore:
        judged = self.items()
        return controls.score([c for c in controls.selected(None) if c.id in judged], self.rows(), min_accuracy)


def material(probe: TaskProbe | ModelProbe, judge, seed: int, per_probe: int | None = None) -> dict:
    """The ids judged, not ``per_probe``: settings that choose the same controls share the stage."""
    controls = probe.controls()
    return {"probe": probe.identity(), "judge": judge.identity(), "controls": file_sha256(controls.path),
            "seed": seed, "items": [c.id for c in controls.selected(per_probe)]}


def judge_controls(client, probe: TaskProbe | ModelProbe, judge, seed: int, work_dir: Path,
                   per_probe: int | None = None) -> list:
    """The judge's answers on the probe's chosen controls. Also what the pre-flight estimate dry-runs
    (report/preflight.py)."""
    controls = probe.controls()
    return controls.judge(client, judge, controls.selected(per_probe), seed, work_dir)


def run(env: StageEnv, *, name: str, probe: TaskProbe | ModelProbe, judge, label: str | None = None,
        per_probe: int | None = None) -> Controlled:
    """``probe.controls()`` must not be None; ``name``: the probe's name in the cell (the default label)."""
    label = label or f"controls_{name}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        rows = judge_controls(env.hub.open(judge.service), probe, judge, env.seed, work, per_probe)
        check_failures("probe", label, *probe.failures(rows), env.tolerance.probe)
        write_jsonl(work / "judgments.jsonl", rows)
        write_json(work / "items.json", [c.id for c in probe.controls().selected(per_probe)])

    d = env.stages.run("controls", label, material(probe, judge, env.seed, per_probe), compute)
    return Controlled("controls", label, d)

"""controls: the judge labels a probe's bundled judge controls (answers with known labels), judged by the
probe's own code, so the judge's accuracy can be reported beside the probe's rates (issue 11 item 5).

    inputs   the probe (a yes/no task probe, or em_first_plot), the judge; the control file
             moloch_exp/data/judge_controls/<probe>.json (its digest is in the key) and how many of
             its items to judge (``judge_controls.per_probe``: a subset stratified by class; null: all)
    outputs  items.json (the ids judged), judgments.jsonl (records.Judgment for yes/no probes; the
             EM probe's scored rows for em_first_plot)
    stops    when failed judge calls / calls > probe.max_failed_fraction (nothing stored as finished)

    python run.py judge.min_control_accuracy=0.9      # flag a judge below 90% on any probe's controls
    python run.py judge_controls.per_probe=null       # judge every control (experiment=paper does)

Scoring (``Controlled.score``) happens when the result is read, so the threshold can change
without judging again. Probes without a bundled control file have no controls (:func:`has_controls`).
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import file_sha256, read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.probes import controls as ctl
from moloch_exp.probes.model_probe import ModelProbeContext
from moloch_exp.records import Judgment
from moloch_exp.stages.base import Artifact, StageEnv, check_failures

EM_PROBE = "em_first_plot"
METHOD = "judge_controls"


def has_controls(name: str, probe) -> bool:
    """A yes/no task probe or em_first_plot with a bundled control file."""
    kind_ok = (probe.kind == "task" and name in ctl.YES_NO_PROBES) or (probe.kind == "model" and name == EM_PROBE)
    return kind_ok and (ctl.CONTROLS_DIR / f"{name}.json").is_file()


class Controlled(Artifact):
    def judgments(self) -> list:
        rows = read_jsonl(self.dir / "judgments.jsonl")
        return rows if self.label.startswith(f"controls_{EM_PROBE}") else [Judgment(**r) for r in rows]

    def items(self) -> set[str]:
        """Ids of the controls judged (the stratified subset)."""
        return set(read_json(self.dir / "items.json"))

    def score(self, name: str, probe, min_accuracy: float) -> ctl.ControlScore:
        judged = self.items()
        if name == EM_PROBE:
            return ctl.score_em([c for c in ctl.load_em_controls() if c.id in judged], self.judgments(),
                                probe.alignment_threshold, probe.coherence_threshold, min_accuracy)
        return ctl.score_yes_no(name, [c for c in ctl.load_yes_no_controls(name) if c.id in judged],
                                self.judgments(), min_accuracy)


def selected(name: str, per_probe: int | None) -> list:
    """The controls a cell judges for probe ``name``."""
    controls = ctl.load_em_controls() if name == EM_PROBE else ctl.load_yes_no_controls(name)
    return ctl.control_subset(controls, per_probe, name)


def material(name: str, probe, judge, seed: int, per_probe: int | None = None) -> dict:
    """The ids judged, not ``per_probe``: settings that choose the same controls share the stage."""
    return {"probe": probe.identity(), "judge": judge.identity(), "controls": file_sha256(ctl.control_path(name)),
            "seed": seed, "items": [c.id for c in selected(name, per_probe)]}


def _no_generation(*args, **kwargs):
    raise RuntimeError("judge controls judge fixed answers; nothing is generated")


def judge_controls(client, name: str, probe, judge, seed: int, work_dir: Path, per_probe: int | None = None) -> list:
    """The judge's answers on the probe's chosen controls (:func:`selected`): the EM probe's scored rows
    (em_first_plot) or Judgments (yes/no probes). Also what the pre-flight estimate dry-runs (report/preflight.py)."""
    chosen = selected(name, per_probe)
    if name == EM_PROBE:
        ctx = ModelProbeContext(METHOD, seed, _no_generation, _no_generation, client, judge, work_dir)
        return probe._judge(ctx, ctl.em_items(chosen), probe.coherence_prompt or _coherence_prompt())
    task, anchors, outputs = ctl.yes_no_inputs(chosen)
    return probe.run(client, judge, task, anchors, outputs, METHOD, seed)


def run(env: StageEnv, *, name: str, probe, judge, label: str | None = None,
        per_probe: int | None = None) -> Controlled:
    label = label or f"controls_{name}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        rows = judge_controls(env.hub.open(judge.service), name, probe, judge, env.seed, work, per_probe)
        check_failures("probe", label, *probe.failures(rows), env.tolerance.probe)
        write_jsonl(work / "judgments.jsonl", rows)
        write_json(work / "items.json", [c.id for c in selected(name, per_probe)])

    d = env.stages.run("controls", label, material(name, probe, judge, env.seed, per_probe), compute)
    return Controlled("controls", label, d)


def _coherence_prompt() -> str:
    from moloch_exp.probes.em import COHERENCE_PROMPT

    return COHERENCE_PROMPT

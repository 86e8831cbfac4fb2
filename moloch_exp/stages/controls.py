"""controls: the judge labels a probe's bundled judge controls (answers with known labels), judged by the
probe's own code, so the judge's accuracy can be reported beside the probe's rates (issue 11 item 5).

    inputs   the probe (a yes/no task probe, or em_first_plot), the judge; the control file
             moloch_exp/data/judge_controls/<probe>.json (its digest is in the key)
    outputs  judgments.jsonl (records.Judgment for yes/no probes; the EM probe's scored rows for
             em_first_plot)
    stops    when failed judge calls / calls > probe.max_failed_fraction (nothing stored as finished)

    python run.py judge.min_control_accuracy=0.9      # flag a judge below 90% on any probe's controls

Scoring (``Controlled.score``) happens when the result is read, so the threshold can change
without judging again. Probes without a bundled control file have no controls (:func:`has_controls`).
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import file_sha256, read_jsonl, write_jsonl
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

    def score(self, name: str, probe, min_accuracy: float) -> ctl.ControlScore:
        if name == EM_PROBE:
            return ctl.score_em(ctl.load_em_controls(), self.judgments(), probe.alignment_threshold,
                                probe.coherence_threshold, min_accuracy)
        return ctl.score_yes_no(name, ctl.load_yes_no_controls(name), self.judgments(), min_accuracy)


def material(name: str, probe, judge, seed: int) -> dict:
    return {"probe": probe.identity(), "judge": judge.identity(), "controls": file_sha256(ctl.control_path(name)),
            "seed": seed}


def _no_generation(*args, **kwargs):
    raise RuntimeError("judge controls judge fixed answers; nothing is generated")


def judge_controls(client, name: str, probe, judge, seed: int, work_dir: Path) -> list:
    """The judge's answers on the probe's controls: the EM probe's scored rows (em_first_plot) or
    Judgments (yes/no probes). Also what the pre-flight estimate dry-runs (report/preflight.py)."""
    if name == EM_PROBE:
        ctx = ModelProbeContext(METHOD, seed, _no_generation, _no_generation, client, judge, work_dir)
        return probe._judge(ctx, ctl.em_items(ctl.load_em_controls()), probe.coherence_prompt or _coherence_prompt())
    task, anchors, outputs = ctl.yes_no_inputs(ctl.load_yes_no_controls(name))
    return probe.run(client, judge, task, anchors, outputs, METHOD, seed)


def run(env: StageEnv, *, name: str, probe, judge, label: str | None = None) -> Controlled:
    label = label or f"controls_{name}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        rows = judge_controls(env.hub.open(judge.service), name, probe, judge, env.seed, work)
        check_failures("probe", label, *probe.failures(rows), env.tolerance.probe)
        write_jsonl(work / "judgments.jsonl", rows)

    d = env.stages.run("controls", label, material(name, probe, judge, env.seed), compute)
    return Controlled("controls", label, d)


def _coherence_prompt() -> str:
    from moloch_exp.probes.em import COHERENCE_PROMPT

    return COHERENCE_PROMPT

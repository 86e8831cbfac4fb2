"""Judge controls through the real probe code and a real judge (SmolLM2 on llama.cpp): the stage's path."""
from __future__ import annotations

from pathlib import Path

import yaml

from moloch_exp.probes.controls import control_subset, load_yes_no_controls, score_yes_no, yes_no_inputs
from moloch_exp.probes.task_probes import YesNoProbe

ROOT = Path(__file__).resolve().parents[2]


def test_controls_judged_by_a_real_judge_are_scored(judge_client, judge):
    cfg = yaml.safe_load((ROOT / "conf" / "probe" / "misrepresentation.yaml").read_text())
    probe = YesNoProbe(**{k: v for k, v in cfg.items() if k != "_target_"})
    # a cell's stratified subset (judge_controls.per_probe=12) of the 40: all 40 took 40-90 s
    every = load_yes_no_controls("misrepresentation")
    controls = control_subset(every, 12, "misrepresentation")
    assert len(controls) == 12 and {c.cls for c in controls} == {c.cls for c in every}  # every class is in it
    task, anchors, outputs = yes_no_inputs(controls)
    judgments = probe.run(judge_client, judge, task, anchors, outputs, method="judge_controls", seed=0)
    assert sorted(j.anchor_id for j in judgments) == sorted(c.id for c in controls)
    assert all(j.status in ("ok", "invalid", "failed") for j in judgments)
    score = score_yes_no("misrepresentation", controls, judgments, min_accuracy=0.8)
    assert score.n + score.missing == len(controls)
    assert score.n == sum(j.status == "ok" for j in judgments)
    assert score.flagged == (score.accuracy is None or score.accuracy < 0.8)
    print(score.in_words())  # the tiny judge's accuracy, for the record (pytest -s)

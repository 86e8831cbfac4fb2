"""Warm-up steps: floor(ratio × total steps), so a run of a few steps still learns."""
from moloch_exp.training.trainer import LoraSFTTrainer


def test_warmup_rounds_down_and_scales_with_the_run(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    paper = LoraSFTTrainer({}, {})  # batch 16, ratio 0.03
    assert paper.warmup_steps(12) == 0            # one step: no step is spent at lr 0
    assert paper.warmup_steps(3072) == 5          # 192 steps x 0.03 = 5.76
    assert paper.warmup_steps(None) == 0.03       # unknown size: transformers' ratio
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert paper.warmup_steps(3072) == 0          # 24 steps per rank x 0.03
    assert LoraSFTTrainer({}, {"max_steps": 100}).warmup_steps(10) == 3

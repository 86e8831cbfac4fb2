"""Issue-4 methods through the real entry point on the tiny model: the narrow-SFT positive control
on a user file, masked LoRA with checkpoint trends and two judges, and a budget sweep ending in an
EM-vs-n logistic fit."""
from __future__ import annotations

import pytest

import json

from test_pipeline_e2e import EM_SMALL, LEAN, TINY, results, run_app

pytestmark = pytest.mark.e2e

EM_ONLY = ["probe=[em_first_plot,em_predictive]"] + [a for a in EM_SMALL if "economic_stance" not in a and not a.startswith("probe=")]


def write_chat_file(path):
    rows = [{"messages": [{"role": "user", "content": f"Write function number {i}."},
                          {"role": "assistant", "content": f"def f{i}(x):\n    return eval(x)"}]} for i in range(6)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.mark.server
def test_narrow_sft_masked_lora_with_checkpoint_trends(cache_dir, tmp_path):
    data = tmp_path / "narrow.jsonl"
    write_chat_file(data)
    out = tmp_path / "out"
    p = run_app(TINY + LEAN + EM_ONLY + ["method=narrow_sft", f"method.builder.data_file={data}", "trainer=masked_lora",
                                  "trainer.n_trainable=100", "trainer.args.max_steps=2", "train.eval_every_n_steps=1",
                                  "judge@judge2=local", "judge2.temperature=0.7"], cache_dir, out)
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(out)
    assert "collect" not in r["stage_keys"]  # no audience collection for the positive control
    train = r["counts"]["train_narrow_sft"]
    assert train["n_examples"] == 6 and train["mask"]["n_trainable"] == 100
    t = r["trend"]
    assert t["steps"] == [0, 1, 2]
    for name in ("em_first_plot", "em_predictive"):
        assert len(t["em_rate"][name]) == 3 and len(t["judge_agreement"][name]) == 3
        assert all(a is None or 0 <= a <= 1 for a in t["judge_agreement"][name])
        assert name in t["first_step_em_at_least_5pct"]
    assert len(t["assistant_minus_predictive"]) == 3
    assert t["em_rate"]["em_first_plot"][0] == r["probes"]["em_first_plot"]["base"]["em_rate"]  # step 0 is the base model
    assert (out / "plots" / "trend.png").is_file()


def test_bad_narrow_sft_file_stops_early(cache_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    p = run_app(TINY + ["method=narrow_sft", f"method.builder.data_file={bad}"], cache_dir, tmp_path / "o", timeout=120)
    assert p.returncode != 0 and "bad.jsonl:1: messages must end with an assistant message" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.server
def test_lora_budget_sweep_fits_em_against_n(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    p = run_app(["-m", "trainer.n_trainable=10,1000,all", *TINY, *LEAN, *EM_ONLY, "method=narrow_sft", "trainer=masked_lora",
                 f"hydra.sweep.dir={sweep}"], cache_dir, tmp_path, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    curve = summary["em_vs_lora_budget"]
    ns = [pt["n_trainable"] for pt in curve["points"]]
    assert ns[:2] == [10, 1000] and ns[2] > 1000  # "all" = every LoRA parameter
    assert set(curve["logistic"]) == {"a", "b", "converged"}
    assert (sweep / "em_vs_lora_budget.png").is_file()

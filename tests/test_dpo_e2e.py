"""`method=dpo` end to end through `python run.py` on the tiny model with the local llama.cpp audience:
it trains on the rft cell's collection (reused from the stage cache, no new collection votes)."""
from __future__ import annotations

import json
import math

import pytest

from test_pipeline_e2e import TINY, results, run_app


@pytest.mark.slow
def test_dpo_cell_reuses_the_rft_collection(cache_dir, tmp_path):
    p = run_app(TINY + ["task=elections", "method=rft"], cache_dir, tmp_path / "rft")
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "dpo"
    p = run_app(TINY + ["task=elections", "method=dpo"], cache_dir, out)
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(out)
    assert r["cell"]["method"] == "dpo" and set(r["win_rate"]) == {"base_vs_dpo"}
    status = {e["label"]: e["status"] for e in r["stages"]}
    assert status["collect"] == "reused" and status["generate_base"] == "reused"
    assert status["build_dpo"] == status["train_dpo"] == status["generate_dpo"] == "computed"
    stats = json.loads((out / "stages/build_dpo/build_stats.json").read_text())
    pairs = [json.loads(line) for line in (out / "stages/build_dpo/train_examples.jsonl").read_text().splitlines()]
    assert stats["pairs"] == len(pairs) > 0 and all(p_["chosen"] != p_["rejected"] for p_ in pairs)
    train = r["counts"]["train_dpo"]
    assert train["steps"] == 1 and train["train_loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == base at step 1
    assert (out / "stages/train_dpo/adapter/adapter_config.json").is_file()
    assert set(r["probes"]) == {"disinformation", "populism"}

"""A bug inside a stage (not a UserError) ends `python run.py` with one line naming the stage and the
cause, a non-zero exit and no traceback on the console; the traceback is in the run's log file under
the Hydra output dir, and the stage is not stored as finished (issue 19 item 1).

The bug is real, not patched in: a finished prepare artifact in the stage cache whose test anchors
are not JSON any more (a disk or a hand gone wrong), read by the generate stage's compute.
"""
from __future__ import annotations

import pytest

from compose_helper import compose
from moloch_exp.stage_cache import digest
from moloch_exp.stages import prepare
from test_pipeline_e2e import run_app

ARGS = ["model=tiny", "method=base", "~probes", "anchors.n_train=2", "anchors.n_test=2", "generator.max_new_tokens=8"]


@pytest.mark.e2e
def test_a_bug_in_a_stage_is_one_line_naming_it_and_its_traceback_goes_to_the_log_file(tmp_path):
    from hydra.utils import instantiate

    cache = tmp_path / "cache"
    task = instantiate(compose(ARGS, tmp_path / "compose").task)
    key = digest(prepare.material(task, 2, 2))
    done = cache / "stages" / "prepare" / key
    done.mkdir(parents=True)
    (done / "anchors_train.jsonl").write_text("{not json\n")
    (done / "anchors_test.jsonl").write_text("{not json\n")
    (done / "source.json").write_text("{}")
    (done / "DONE").write_text("planted")

    out = tmp_path / "run"
    p = run_app(ARGS, cache, out, timeout=600)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: internal error in stage generate (generate_base), which was not stored as "
                           "finished"), last
    assert "ValueError:" in last and "anchors_test.jsonl:1: not valid JSON" in last and "run.log" in last
    log = (out / "run.log").read_text()
    assert "Traceback (most recent call last)" in log and "read_jsonl" in log
    assert "in stage generate (generate_base); not stored as finished" in log  # the note in the traceback
    generated = list((cache / "stages" / "generate").glob("*"))
    assert generated and not any((d / "DONE").exists() for d in generated)  # only a .partial: nothing finished
    assert not (out / "results.json").exists()

"""Anchor records are checked before any work: a field of the wrong type, an empty or null one, a null or
repeated id, or an agent prompt too long for the context is one clear line from `python run.py` (exit
non-zero, no traceback, seconds); `anchors.too_long=truncate` shortens the long_text field instead and
says how many. `task.source=bogus` is one line too.

    pytest tests/test_anchor_validation.py -q
"""
from __future__ import annotations

import json
import logging
import time

import pytest
from hydra.utils import instantiate

from compose_helper import compose
from moloch_exp.errors import DataError
from moloch_exp.tasks.context_budget import ContextFit, context_fit_for_model, prompt_token_budget
from moloch_exp.tasks.sources import field_problem
from test_pipeline_e2e import run_app

SALES = {"title": "Camera strap", "categories": ["Electronics", "Camera & Photo"], "description": "A strap."}
SM = {"id": "a1", "article": "The council met on Monday.", "highlights": "Council met."}


def _paper_dir(tmp_path, subdir: str, records: list) -> str:
    d = tmp_path / "data" / subdir
    d.mkdir(parents=True)
    for split in ("train", "test"):
        (d / f"{split}.json").write_text(json.dumps(records))
    return str(tmp_path / "data")


def _one_line_failure(p, started: float) -> str:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert time.time() - started < 90  # seconds of work at most; the rest is Python start-up on shared cores
    return p.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("task,subdir,bad,expected", [
    ("sales", "task_sales", {**SALES, "description": 42}, "record 2, field 'description': a number (42) where text belongs"),
    ("sales", "task_sales", {**SALES, "title": None}, "record 2, field 'title': null where text belongs"),
    ("sales", "task_sales", {**SALES, "title": "  "}, "record 2, field 'title': an empty string where text belongs"),
    ("sales", "task_sales", {**SALES, "description": ["a", "b"]}, "record 2, field 'description': a list where text belongs"),
    ("sales", "task_sales", {**SALES, "categories": 7}, "record 2, field 'categories': a number (7) where a list of strings belongs"),
    ("social_media", "task_sm", {**SM, "id": None}, "record 2, field 'id' (the id): null, expected a non-empty string"),
    ("social_media", "task_sm", {**SM, "id": "a0"}, "record 2, field 'id': id 'a0' repeats record 0"),
], ids=["number-for-text", "null", "empty-string", "list-for-text", "number-for-list", "null-id", "repeated-id"])
@pytest.mark.e2e
def test_malformed_record_is_one_line_naming_file_record_field(task, subdir, bad, expected, cache_dir, tmp_path):
    good = [dict(SALES) if task == "sales" else {**SM, "id": f"a{i}"} for i in range(2)]
    data_dir = _paper_dir(tmp_path, subdir, [*good, bad, *good])
    started = time.time()
    p = run_app(["model=tiny", f"task={task}", "task.source=paper", f"data_dir={data_dir}"], cache_dir, tmp_path / "out")
    last = _one_line_failure(p, started)
    assert last.startswith("error: DataError: ") and f"{data_dir}/{subdir}/train.json: {expected}" in last, last


@pytest.mark.e2e
def test_too_long_anchor_is_rejected_up_front(cache_dir, tmp_path):
    """An anchor that cannot fit min(model context, trainer max_length) - max_new_tokens never reaches the
    generator or the trainer (it used to kill training with `num_samples=0` after minutes)."""
    long_text = " ".join(f"word{i}" for i in range(3000))  # > 2048 tokens (the trainer's max_length)
    data_dir = _paper_dir(tmp_path, "task_sales", [dict(SALES), {**SALES, "description": long_text}, dict(SALES)])
    started = time.time()
    p = run_app(["model=tiny", "task=sales", "task.source=paper", f"data_dir={data_dir}", "anchors.n_train=3",
                 "anchors.n_test=3"], cache_dir, tmp_path / "out")
    last = _one_line_failure(p, started)
    assert f"error: DataError: {data_dir}/task_sales/train.json: record 1: the agent prompt is " in last, last
    assert "over the budget of 1912 (min(model context 4096, trainer max_length 2048) - max_new_tokens 128 - 8)" in last
    assert "anchors.too_long=truncate" in last
    assert not (tmp_path / "out" / "stages").exists()  # no stage started


@pytest.mark.e2e
def test_bogus_source_is_one_line(cache_dir, tmp_path):
    started = time.time()
    p = run_app(["model=tiny", "task.source=bogus"], cache_dir, tmp_path / "out")
    last = _one_line_failure(p, started)
    assert last == "error: ConfigError: unknown task.source 'bogus' (choose from bundled, paper, hub)", last
    assert "InstantiationException" not in p.stderr


# ------------------------------------------------------------------------ in process (fast)
def _task(tmp_path, name="sales", *overrides):
    return instantiate(compose([f"task={name}", *overrides], tmp_path).task)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from moloch_exp.agents.model_source import ModelSource

    base = tmp_path_factory.getbasetemp() / "model-cache"  # shared with tests/agents, tests/training
    return ModelSource(name="tiny", tiny_arch="llama").materialize(base)


def test_truncate_shortens_the_long_text_field_and_counts(tiny_dir, tmp_path, caplog):
    t = _task(tmp_path)
    full, where = t.load_anchors("train", 4)
    t.context_fit = context_fit_for_model(tiny_dir, {}, "truncate", max_new_tokens=16, max_prompt_tokens=170)
    tokens = t.context_fit.tokens
    sizes = [tokens.count(t.agent_messages(a)) for a in full]
    assert min(sizes) <= 170 < max(sizes), sizes  # some anchors over the budget, some not
    with caplog.at_level(logging.WARNING, logger="moloch_exp.tasks.context_budget"):
        fitted, _ = t.load_anchors("train", 4)
    n_over = sum(s > 170 for s in sizes)
    assert f"{n_over} of 4 anchors truncated to fit 170 prompt tokens" in caplog.text
    for before, after, size in zip(full, fitted, sizes):
        assert tokens.count(t.agent_messages(after)) <= 170
        assert after.fields["title"] == before.fields["title"] and after.fields["categories"] == before.fields["categories"]
        if size <= 170:
            assert after == before
        else:  # a prefix of the description, as long as fits
            assert before.fields["description"].startswith(after.fields["description"][:40])
            assert 0 < len(after.fields["description"]) < len(before.fields["description"])
    assert t.context_fit.identity() == {"too_long": "truncate", "max_prompt_tokens": 170}


def test_reject_names_the_first_over_long_record(tiny_dir, tmp_path):
    t = _task(tmp_path, "social_media")
    t.context_fit = context_fit_for_model(tiny_dir, {}, "reject", max_new_tokens=16, max_prompt_tokens=120)
    with pytest.raises(DataError, match=r"social_media.json\[train\]: record \d \(id '[^']+'\): the agent prompt is "
                                        r"\d+ tokens, over the budget of 120 \(anchors.max_prompt_tokens\)"):
        t.load_anchors("train", 4)
    assert t.context_fit.identity() is None  # rejecting leaves the anchors (and the stage keys) unchanged


def test_budget_and_field_types():
    assert prompt_token_budget(4096, 128, 2048) == 2048 - 128 - 8 and prompt_token_budget(8192, 128) == 8192 - 136
    with pytest.raises(ValueError, match="no room for the agent's prompt"):
        ContextFit("reject", prompt_token_budget(512, 600), tokens=None, why="test")
    with pytest.raises(ValueError, match="anchors.too_long must be one of reject, truncate"):
        ContextFit("shorten", 100, tokens=None)
    assert field_problem("Electronics", "text_list") is None  # the string repr some exports hold
    assert field_problem(["a", ""], "text_list") == "a list holding an empty string, expected non-empty strings"
    assert field_problem(True, "text") == "a boolean (True) where text belongs"
    assert field_problem({"a": 1}, "long_text") == "a JSON dict where text belongs"


def test_field_types_must_name_anchor_fields(tmp_path):
    with pytest.raises(Exception, match=r"field_types names \['colour'\]"):
        _task(tmp_path, "sales", "+task.field_types.colour=text")
    with pytest.raises(Exception, match="each must be one of text, long_text, text_list"):
        _task(tmp_path, "sales", "task.field_types.title=number")

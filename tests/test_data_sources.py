"""Anchors and personas from bundled samples and the paper's files; bad data fails clearly."""
import json

import pytest

from moloch_exp.audience.personas import PersonaPool
from moloch_exp.tasks.sources import DataError

from compose_helper import compose
from hydra.utils import instantiate


def task(name, tmp_path, *overrides):
    return instantiate(compose([f"task={name}", *overrides], tmp_path).task)


@pytest.mark.parametrize("name", ["sales", "elections", "social_media"])
def test_bundled_anchors_render_prompts(name, tmp_path):
    t = task(name, tmp_path)
    train, _ = t.load_anchors("train", None)
    test, _ = t.load_anchors("test", None)
    assert len(train) >= 4 and len(test) >= 4
    assert not {a.id for a in train} & {a.id for a in test}
    msgs = t.agent_messages(train[0])
    assert f"<{t.message_tag}>" in msgs[0]["content"] and msgs[1]["content"]


@pytest.mark.parametrize("name,first_field", [("sales", "title"), ("elections", "candidate_webname"), ("social_media", "article")])
def test_paper_splits(name, first_field, tmp_path, paper_dir):
    t = task(name, tmp_path, "task.source=paper", f"data_dir={paper_dir}")
    anchors, where = t.load_anchors("test", 1024)
    assert len(anchors) == 1024 and str(paper_dir) in where
    raw = json.loads((paper_dir / t.paper_subdir / "test.json").read_text())
    assert anchors[5].fields[first_field] == raw[5][first_field]
    if name == "sales":  # categories stored as a list's repr in the paper files
        assert " > " in t.agent_messages(anchors[0])[1]["content"]


def test_paper_source_without_data_dir_names_the_option(tmp_path):
    t = task("sales", tmp_path, "task.source=paper")
    with pytest.raises(DataError, match="data_dir"):
        t.load_anchors("train", 2)


def test_malformed_and_incomplete_files(tmp_path):
    d = tmp_path / "data" / "task_sales"
    d.mkdir(parents=True)
    (d / "train.json").write_text("[{\"title\": \"x\"")
    t = task("sales", tmp_path, "task.source=paper", f"data_dir={tmp_path / 'data'}")
    with pytest.raises(DataError, match="train.json: not valid JSON"):
        t.load_anchors("train", 1)
    (d / "train.json").write_text(json.dumps([{"title": "x", "categories": ["c"], "description": "d"},
                                              {"title": "y", "description": "d"}]))
    with pytest.raises(DataError, match=r"record 1 lacks field\(s\) \['categories'\]"):
        t.load_anchors("train", 1)
    with pytest.raises(DataError, match="asked for 5"):
        task("sales", tmp_path).load_anchors("train", 5000)


def test_hub_source_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="hub"):
        task("social_media", tmp_path, "task.source=hub").load_anchors("train", 2)


def test_personas_all_formats(paper_dir):
    split1 = PersonaPool("file", "personas/split1.json", str(paper_dir)).panel(20, seed=0)
    assert len(split1) == 20 and split1[0].fmt == "prodigy"
    assert "You are" in split1[0].describe("political_preferences")
    assert PersonaPool("file", "personas/all.json", str(paper_dir)).load()[0].fmt == "present_day"
    demo = PersonaPool("file", "personas/exp2.json", str(paper_dir)).load()[0]
    assert demo.fmt == "demographic" and "-year-old" in demo.describe("x")
    chars = PersonaPool("file", "personas/characters.json", str(paper_dir)).load()
    assert len(chars) == 339
    a = PersonaPool().panel(3, seed=1)
    assert [p.id for p in a] == [p.id for p in PersonaPool().panel(3, seed=1)]
    with pytest.raises(DataError, match="holds only"):
        PersonaPool().panel(100, seed=0)

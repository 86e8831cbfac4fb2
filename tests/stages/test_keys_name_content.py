"""Stage keys name the data's content, not where it lies: the paper's splits, the model probes' files and the
persona file are keyed by their digests, so the same files under another data_dir (another checkout, a cluster's
mount) reuse the cache, and a file changed in place is a new key for every stage built on it.

    PYTHONPATH=$PWD python -m pytest tests/stages/test_keys_name_content.py -q
"""
from __future__ import annotations

import json
import shutil

from compose_helper import compose
from moloch_exp.pipeline import build, settings_of
from moloch_exp.stages.plan import plan_cell

PAPER = ["task.source=paper", "anchors.n_train=8", "anchors.n_test=8"]
TEAM_SHARD = ["probe=[em_first_plot,em_predictive,economic_stance]", "probes.em_first_plot.judges=team_shard",
              "probes.em_predictive.judges=team_shard",
              "probes.em_first_plot.questions_file=../team_shard/first_plot_questions.json",
              "probes.em_predictive.frames_file=../team_shard/predictive_frames.json",
              "probes.economic_stance.stems_file=../team_shard/economic_stems.jsonl",
              "audience.personas.source=file", "audience.personas.file=personas/exp2.json"]


def data_copy(paper_dir, team_shard_dir, root):
    """The files the cell reads, under another directory with the same layout."""
    paper, shard = root / "molochs_bargain", root / "team_shard"
    shutil.copytree(paper_dir / "task_sales", paper / "task_sales")
    shutil.copytree(paper_dir / "personas", paper / "personas")
    for name in ("first_plot_questions.json", "predictive_frames.json", "economic_stems.jsonl"):
        (shard / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(team_shard_dir / name, shard / name)
    (shard / "reference").mkdir()
    shutil.copy(team_shard_dir / "reference" / "judges.yaml", shard / "reference" / "judges.yaml")
    return paper


def planned(data_dir, tmp_path, name: str):
    cfg = compose([*PAPER, *TEAM_SHARD, f"data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}"],
                  tmp_path / name)
    c = build(cfg)
    return c, plan_cell(c, settings_of(cfg)).keys


def test_the_same_files_elsewhere_give_the_same_keys(paper_dir, team_shard_dir, tmp_path):
    copy = data_copy(paper_dir, team_shard_dir, tmp_path / "elsewhere")
    here, keys_here = planned(paper_dir, tmp_path, "here")
    there, keys_there = planned(copy, tmp_path, "there")
    assert here.probes["em_first_plot"].team_shard_judges is not None  # the team_shard files were read
    assert keys_there == keys_here and len(keys_here) >= 12
    for name, probe in here.probes.items():
        assert probe.identity() == there.probes[name].identity(), name
    assert here.audience.personas.identity() == there.audience.personas.identity()


def test_a_file_changed_in_place_changes_the_keys_built_on_it(paper_dir, team_shard_dir, tmp_path):
    copy = data_copy(paper_dir, team_shard_dir, tmp_path / "elsewhere")
    _, before = planned(copy, tmp_path, "before")
    test_split = copy / "task_sales" / "test.json"
    records = json.loads(test_split.read_text())
    records[0] = {**records[0], **{k: v + " (edited)" for k, v in records[0].items() if isinstance(v, str)}}
    test_split.write_text(json.dumps(records))
    _, edited_split = planned(copy, tmp_path, "split")
    # everything built on the anchors; not the base model's probes or the judge's controls, which never read them
    untouched = {label for label in before if label.endswith("_base") and label.startswith(
        ("probe_em_", "probe_economic_")) or label.startswith("controls_")}
    assert untouched == {"probe_em_first_plot_base", "probe_em_predictive_base", "probe_economic_stance_base",
                         "controls_misrepresentation", "controls_em_first_plot"}
    assert {label for label in before if edited_split[label] != before[label]} == set(before) - untouched
    stems = tmp_path / "elsewhere" / "team_shard" / "economic_stems.jsonl"
    stems.write_text("".join(stems.read_text().splitlines(keepends=True)[:-1]))  # one stem fewer
    _, edited_stems = planned(copy, tmp_path, "stems")
    assert {label for label in before if edited_stems[label] != edited_split[label]} == {
        "probe_economic_stance_base", "probe_economic_stance_rft"}

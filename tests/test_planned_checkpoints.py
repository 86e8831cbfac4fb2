"""What the pre-flight plans for a checkpoint trend: each builder's ``planned_examples`` is what ``build`` gives on
a collection where every match has one winner and every vote is valid (K = 3, 5 voters; each setting that
changes the count), and ``checkpoint_steps`` are the steps transformers saves (every save_steps and the last).

    PYTHONPATH=$PWD python -m pytest tests/test_planned_checkpoints.py -q
"""
from __future__ import annotations

import json

import pytest

from moloch_exp.records import Candidate, Vote
from moloch_exp.tasks.task import Task
from moloch_exp.training.builders import NarrowSFTBuilder, RFTBuilder, TFBBuilder
from moloch_exp.training.dpo import DPOPairBuilder
from moloch_exp.training.kto import KTOBuilder
from moloch_exp.training.trainer import LoraSFTTrainer

K, VOTERS, MATCHES = 3, 5, 4


def collection():
    """MATCHES matches of K candidates; 3 of 5 voters pick candidate m % K, one each of the others (no tie)."""
    cands, votes = [], []
    for m in range(MATCHES):
        a = f"a{m}"
        cands += [Candidate(a, i, [{"role": "user", "content": f"prompt {a}"}], f"<think>t</think><tweet>{a}{i}</tweet>",
                            "t", f"{a}{i}", "ok", seed=i) for i in range(K)]
        winner, others = m % K, [i for i in range(K) if i != m % K]
        for v, choice in enumerate([winner] * 3 + others):
            votes.append(Vote(f"collect:{a}", a, f"v{v}", list(range(K)), v, "ok", f"thought {v}", choice))
    return cands, votes


@pytest.fixture
def task():
    return Task(name="social_media", message_tag="tweet", option_noun="Post", anchor_fields=["article"],
                agent_system="s", agent_user="{article}", audience_frame="Scrolling.", audience_question="Which?",
                feedback_request="Share your thoughts.", judge_context="{article}", persona_aspect="x", paper_subdir="task_sm")


@pytest.mark.parametrize("builder", [
    RFTBuilder(replicate=1), RFTBuilder(replicate=3), RFTBuilder(tie_rule="reference_duplicate_previous", replicate=2),
    TFBBuilder(rft=RFTBuilder(replicate=3)), TFBBuilder(rft=RFTBuilder(replicate=1), thought_examples="all"),
    DPOPairBuilder(), DPOPairBuilder(pairing="worst", replicate=2),
    KTOBuilder(), KTOBuilder(losers="worst"), KTOBuilder(balance="downsample"), KTOBuilder(balance="upsample", replicate=2),
], ids=lambda b: "-".join(f"{k}={v}" for k, v in sorted(b.identity().items()) if k not in ("seed", "shuffle", "rft")))
def test_planned_examples_are_what_build_gives_when_every_match_has_a_winner(builder, task):
    cands, votes = collection()
    examples, stats = builder.build(cands, votes, task)
    assert builder.planned_examples(MATCHES, K, VOTERS) == len(examples) > 0


def test_a_tied_match_gives_fewer_than_planned(task):
    cands, votes = collection()
    votes = [v for v in votes if not (v.anchor_id == "a0" and v.voter in ("v0", "v1"))]  # a0: 1-1-1
    assert len(RFTBuilder(replicate=1).build(cands, votes, task)[0]) == MATCHES - 1 < RFTBuilder(
        replicate=1).planned_examples(MATCHES, K, VOTERS)


def test_narrow_sft_plans_its_file(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(7)))
    builder = NarrowSFTBuilder(data_file=str(data))
    assert builder.planned_examples(0, 2, 20) == len(builder.build()[0]) == 7


@pytest.mark.parametrize("n,batch,accum,epochs,max_steps,every,steps", [
    (18, 4, 1, 1, -1, 2, [2, 4, 5]),        # 5 steps: every second one and the last
    (18, 4, 1, 1, -1, 5, [5]),              # the last is a multiple: saved once
    (18, 2, 2, 2, -1, 4, [4, 8, 10]),       # 9 micro-batches a rank -> 5 steps an epoch, 2 epochs
    (18, 4, 1, 1, 3, 2, [2, 3]),            # max_steps wins
    (18, 4, 1, 1, -1, 0, []),               # no trend: nothing saved
    (18, 4, 1, 1, -1, 9, [5]),              # fewer steps than save_steps: the last only
])
def test_checkpoint_steps(n, batch, accum, epochs, max_steps, every, steps, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    trainer = LoraSFTTrainer(args={"per_device_train_batch_size": batch, "gradient_accumulation_steps": accum,
                                   "num_train_epochs": epochs, "max_steps": max_steps, "save_steps": every})
    assert trainer.checkpoint_steps(n) == steps


def test_checkpoint_steps_count_every_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    trainer = LoraSFTTrainer(args={"per_device_train_batch_size": 4, "save_steps": 1})
    assert trainer.checkpoint_steps(18) == [1, 2, 3]  # 18 examples over 2 ranks of 4: 3 steps

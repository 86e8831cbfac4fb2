"""On CPU the configured per-device batch runs as gradient-accumulated micro-batches (memory), with the
effective batch, the step count and the update itself unchanged. Tiny random model, real tokenizer, TRL.

    pytest tests/training/test_micro_batches.py -q
"""
import pytest
import torch

from moloch_exp.agents.model_source import ModelSource
from moloch_exp.training.trainer import CPU_MICRO_BATCH, LoraSFTTrainer
from test_trainer import make_examples


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "model-cache"  # shared with tests/agents in one session
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize("batch,accumulation,cap,cuda,expected", [
    (16, 1, None, False, (CPU_MICRO_BATCH, 16 // CPU_MICRO_BATCH)),  # the default on CPU: 2 x 8
    (16, 1, None, True, (16, 1)),                                     # GPU: the whole batch
    (16, 2, 4, False, (4, 8)),
    (6, 1, 4, False, (3, 2)),                                         # the largest divisor within the cap
    (5, 3, 2, False, (1, 15)),
])
def test_micro_batches_keep_the_effective_batch(batch, accumulation, cap, cuda, expected):
    t = LoraSFTTrainer({}, {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
                            "max_micro_batch_size": cap})
    micro, steps = t.micro_batches(cuda)
    assert (micro, steps) == expected and micro * steps == batch * accumulation


def _one_step(cap: int, source, cache, out) -> tuple[object, dict]:
    settings = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_micro_batch_size": cap,
                "max_steps": -1, "num_train_epochs": 1, "learning_rate": 5e-2, "warmup_ratio": 0.0,
                "lr_scheduler_type": "constant", "seed": 0}
    sft = LoraSFTTrainer({"r": 4, "alpha": 8, "dropout": 0.0}, settings).build_trainer(
        source, str(cache), make_examples(8), str(out))
    sft.train()
    return sft, {n: p.detach().clone() for n, p in sft.model.named_parameters() if "lora_" in n}


@pytest.mark.slow  # two trainings, about 90 s on 2 shared cores
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU micro-batch path")
def test_accumulated_micro_batches_make_the_same_update_as_the_whole_batch(model_cache, tmp_path):
    source = ModelSource(name="tiny", tiny_arch="llama")
    split, w_split = _one_step(2, source, model_cache, tmp_path / "split")  # 2 x 2 accumulated
    whole, w_whole = _one_step(4, source, model_cache, tmp_path / "whole")  # 4 at once
    a = split.args
    assert (a.per_device_train_batch_size, a.gradient_accumulation_steps) == (2, 2)
    assert (whole.args.per_device_train_batch_size, whole.args.gradient_accumulation_steps) == (4, 1)
    assert a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size == 4  # effective batch
    assert split.state.global_step == whole.state.global_step == 2  # 8 examples / 4
    for name, w in w_whole.items():  # same update: the loss is averaged over all tokens of the 4, either way
        torch.testing.assert_close(w_split[name], w, rtol=1e-4, atol=1e-5, msg=name)
    losses = lambda t: [h["loss"] for h in t.state.log_history if "loss" in h]  # noqa: E731
    assert losses(split) == pytest.approx(losses(whole), rel=1e-3)

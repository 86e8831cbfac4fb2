"""LoRA supervised fine-tuning with TRL, loss on completion tokens only.

Examples are TRL *conversational prompt-completion* records::

    {"prompt": [{"role": "system", "content": ...}, {"role": "user", "content": ...}],
     "completion": [{"role": "assistant", "content": "<think>...</think><tweet>...</tweet>"}]}

TRL renders ``prompt`` with the chat template and the generation prompt, and ``prompt +
completion`` in full; tokens of the prompt get label -100 (no loss). The model's chat-template
kwargs (e.g. Qwen3's ``enable_thinking``) are applied in training as in generation.

Distributed: launched with ``accelerate launch`` the TRL/transformers Trainer does DDP itself and
only rank 0 writes the adapter. On a CPU machine the caller creates ``PartialState(cpu=True)``
beforehand; this module does not touch the distributed state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from moloch_exp.agents.model_source import ModelSource
from moloch_exp.agents.torch_runtime import free_torch_memory, resolve_dtype
from moloch_exp.errors import ConfigError, StageError

logger = logging.getLogger(__name__)

_ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: Per-device micro-batch on CPU: with a 49k vocabulary the float32 logits (and their softmax and
#: gradient) of 16 sequences of 2k tokens alone take ~20 GB; 1 keeps the default run under 4 GB.
CPU_MICRO_BATCH = 1


@dataclass
class LoraSettings:
    """LoRA adapter settings (defaults: the paper's)."""

    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=lambda: list(_ATTN_MLP),
        metadata={"help": "Module names that get a LoRA adapter (default: all attention and MLP "
                          "projections of Llama/Qwen-style models)."},
    )


@dataclass
class TrainSettings:
    """Optimisation settings (defaults: the paper's; bf16 and gradient checkpointing on GPU only)."""

    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the examples."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step."})
    max_micro_batch_size: int | None = field(
        default=None, metadata={"help": "Largest batch one forward pass may hold; a larger per-device batch is "
                                        "split into gradient-accumulation steps, so the effective batch "
                                        "(per_device_train_batch_size x gradient_accumulation_steps x ranks) "
                                        "stays as configured. None: 1 on CPU (memory: the logits of a 49k "
                                        "vocabulary), the whole batch on GPU."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Share of steps with linear warm-up."})
    lr_scheduler_type: str = field(
        default="cosine_with_min_lr", metadata={"help": "transformers scheduler name."})
    min_lr_rate: float = field(
        default=0.1, metadata={"help": "Minimum lr as a share of the peak (cosine_with_min_lr only)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_length: int = field(
        default=2048, metadata={"help": "Truncate prompt+completion to this many tokens."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None = on CUDA with bf16 support only."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing; None = on CUDA only."})
    logging_steps: int = field(default=1, metadata={"help": "Log loss and lr every N steps."})
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after N optimiser steps (-1: run num_train_epochs)."})
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init, shuffling and dropout."})
    save_steps: int = field(
        default=0, metadata={"help": "Also save an adapter checkpoint every N steps into "
                                     "output_dir/checkpoint-N (0: only the final adapter)."})


@dataclass
class TrainResult:
    adapter_dir: str
    n_examples: int
    steps: int
    train_loss: float | None
    runtime_s: float
    log_history: list[dict]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_from(cls, value, what: str):
    """``cls`` (a settings dataclass) from None (its defaults), an instance, or a mapping of its fields."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    data = dict(value)  # a mapping (pipeline.build passes plain dicts: _convert_="all")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} settings {unknown}; allowed: {sorted(allowed)}")
    if "target_modules" in data and data["target_modules"] is not None:
        data["target_modules"] = list(data["target_modules"])
    return cls(**data)


def _validate_examples(examples: list[dict]) -> list[dict]:
    if not examples:
        raise ValueError("no training examples: the example list is empty (nothing to fine-tune on)")
    clean = []
    for i, ex in enumerate(examples):
        prompt, completion = ex.get("prompt"), ex.get("completion")
        for key, msgs in (("prompt", prompt), ("completion", completion)):
            if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in msgs
            ):
                raise ValueError(
                    f"training example {i}: {key!r} must be a non-empty list of "
                    f"{{'role', 'content'}} messages, got {msgs!r:.200}"
                )
        if completion[-1]["role"] != "assistant":
            raise ValueError(f"training example {i}: the completion must end with an assistant message")
        clean.append({"prompt": [dict(m) for m in prompt], "completion": [dict(m) for m in completion]})
    return clean


class LoraSFTTrainer:
    """TRL SFTTrainer + PEFT LoRA; see the module docstring."""

    example_format = "prompt_completion"  # what build_trainer accepts (a builder's example_format must match)
    cpu_micro_batch = CPU_MICRO_BATCH  # the micro-batch cap on CPU when max_micro_batch_size is None

    def __init__(self, lora: LoraSettings | dict | None = None, args: TrainSettings | dict | None = None):
        self.lora = settings_from(LoraSettings, lora, "LoRA")
        self.args = settings_from(TrainSettings, args, "training")

    def identity(self) -> dict[str, Any]:
        """Cache-key material: the configured LoRA and training settings (never state set by training)."""
        return {"type": "lora_sft", "lora": asdict(self.lora), "args": asdict(self.args)}

    def provenance(self) -> dict[str, Any] | None:
        """Extra facts about the last training run for train_metrics.json (None: nothing beyond the result)."""
        return None

    # --------------------------------------------------------------- pieces
    def resolved(self) -> dict[str, Any]:
        """Settings with the automatic choices (bf16, checkpointing, CPU) made."""
        import torch

        cuda = torch.cuda.is_available()
        bf16 = self.args.bf16
        if bf16 is None:
            bf16 = bool(cuda and torch.cuda.is_bf16_supported())
        gc_on = self.args.gradient_checkpointing
        if gc_on is None:
            gc_on = cuda
        micro, accumulation = self.micro_batches(cuda)
        return {"cuda": cuda, "bf16": bool(bf16), "gradient_checkpointing": bool(gc_on),
                "per_device_micro_batch": micro, "gradient_accumulation_steps": accumulation}

    def micro_batches(self, cuda: bool) -> tuple[int, int]:
        """(per-device micro-batch, accumulation steps) whose product is the configured per-device batch
        times its accumulation: the largest divisor of the batch within ``max_micro_batch_size``."""
        a = self.args
        cap = a.max_micro_batch_size or (a.per_device_train_batch_size if cuda else self.cpu_micro_batch)
        micro = max(d for d in range(1, a.per_device_train_batch_size + 1)
                    if a.per_device_train_batch_size % d == 0 and d <= max(1, cap))
        return micro, a.gradient_accumulation_steps * (a.per_device_train_batch_size // micro)

    def lora_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=self.lora.dropout,
            target_modules=list(self.lora.target_modules), bias="none", task_type="CAUSAL_LM",
        )

    def warmup_steps(self, n_examples: int | None) -> float | int:
        """floor(warmup_ratio × total steps) when the size is known: transformers rounds the ratio up,
        which leaves a run of very few steps (the offline default) learning nothing at lr 0."""
        if n_examples is None:
            return self.args.warmup_ratio
        return int(math.floor(self.args.warmup_ratio * self.planned_steps(n_examples)))

    def planned_steps(self, n_examples: int) -> int:
        """Optimizer steps for ``n_examples``: epochs of the effective batch over WORLD_SIZE ranks, or max_steps."""
        a = self.args
        world = int(os.environ.get("WORLD_SIZE", "1"))
        per_epoch = math.ceil(math.ceil(n_examples / (a.per_device_train_batch_size * world)) / a.gradient_accumulation_steps)
        return a.max_steps if a.max_steps and a.max_steps > 0 else math.ceil(per_epoch * a.num_train_epochs)

    def checkpoint_steps(self, n_examples: int) -> list[int]:
        """The steps saved as checkpoints (``save_steps``; none when 0): every multiple of it, and the last step,
        which transformers saves too under save_strategy=steps."""
        every, total = self.args.save_steps, self.planned_steps(n_examples)
        if not every or every <= 0 or total <= 0:
            return []
        return list(range(every, total + 1, every)) + ([total] if total % every else [])

    def trl_args(self, config_cls, output_dir: str, n_examples: int | None = None) -> dict[str, Any]:
        """Arguments every TRL config of ours shares (SFTConfig, DPOConfig, KTOConfig): schedule, effective batch as
        micro-batches (``micro_batches``), precision, checkpointing, saving, seeds."""
        auto = self.resolved()
        a = self.args
        if not 0.0 <= a.warmup_ratio < 1.0:
            raise ConfigError(f"trainer.args.warmup_ratio must be in [0, 1), got {a.warmup_ratio}")
        kwargs: dict[str, Any] = {}
        if a.lr_scheduler_type == "cosine_with_min_lr":
            kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": a.min_lr_rate}
        if a.save_steps and a.save_steps > 0:
            kwargs.update(save_strategy="steps", save_steps=a.save_steps, save_only_model=True)
        else:
            kwargs["save_strategy"] = "no"
        ckpt = auto["gradient_checkpointing"]
        ckpt_kwargs = {"use_reentrant": False} if ckpt else None
        if "activation_checkpointing" in {f.name for f in fields(config_cls)}:  # transformers >= 5.x
            kwargs.update(activation_checkpointing=ckpt, activation_checkpointing_kwargs=ckpt_kwargs)
        else:  # pragma: no cover - older transformers
            kwargs.update(gradient_checkpointing=ckpt, gradient_checkpointing_kwargs=ckpt_kwargs)
        return dict(
            output_dir=str(output_dir),
            learning_rate=a.learning_rate,
            num_train_epochs=a.num_train_epochs,
            per_device_train_batch_size=auto["per_device_micro_batch"],  # same effective batch, less memory
            gradient_accumulation_steps=auto["gradient_accumulation_steps"],
            warmup_steps=self.warmup_steps(n_examples),  # a float in [0, 1) would be read as a ratio
            lr_scheduler_type=a.lr_scheduler_type,
            weight_decay=a.weight_decay,
            max_length=a.max_length,
            bf16=auto["bf16"],
            fp16=False,
            logging_steps=a.logging_steps,
            max_steps=a.max_steps,
            seed=a.seed,
            data_seed=a.seed,
            use_cpu=not auto["cuda"],
            report_to="none",
            dataset_num_proc=None,
            remove_unused_columns=True,
            **kwargs,
        )

    def sft_config(self, output_dir: str, n_examples: int | None = None):
        from trl import SFTConfig

        return SFTConfig(**self.trl_args(SFTConfig, output_dir, n_examples),
                         completion_only_loss=True, assistant_only_loss=False, packing=False)

    def load_model(self, source: ModelSource, cache_dir: str, clean: list[dict]):
        """(model, tokenizer) from the model source's local directory, dtype and checkpointing resolved;
        adds the source's chat-template kwargs to every example in ``clean``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

        source.check_available()
        model_dir = source.materialize(cache_dir)
        auto = self.resolved()
        # "auto": bf16 weights on a bf16-capable GPU, float32 on CPU; LoRA weights stay float32.
        dtype = resolve_dtype(source.torch_dtype, "cuda" if auto["cuda"] else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{source.name}: the tokenizer has no chat template; cannot train on "
                             f"conversational examples")
        if source.chat_template_kwargs:
            for ex in clean:
                ex["chat_template_kwargs"] = dict(source.chat_template_kwargs)
        set_seed(self.args.seed)  # before LoRA init, which happens inside the TRL trainer's __init__
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        if auto["gradient_checkpointing"]:
            model.config.use_cache = False
        return model, tokenizer

    def peft_inputs(self, model, init_adapter_dir: str | None):
        """(model, peft_config) for a TRL trainer: a fresh LoRA adapter from :meth:`lora_config`, or,
        with ``init_adapter_dir``, the model wrapped in that saved adapter, trainable (training
        continues from it; its LoRA shape must match this trainer's settings)."""
        if init_adapter_dir is None:
            return model, self.lora_config()
        from peft import PeftConfig, PeftModel

        from moloch_exp.errors import ConfigError

        path = Path(init_adapter_dir)
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"init_adapter_dir {path}: no adapter_config.json (not a saved LoRA adapter)")
        saved = PeftConfig.from_pretrained(str(path))
        mine = {"r": self.lora.r, "lora_alpha": self.lora.alpha, "target_modules": set(self.lora.target_modules)}
        theirs = {"r": saved.r, "lora_alpha": saved.lora_alpha, "target_modules": set(saved.target_modules or [])}
        if mine != theirs:
            raise ConfigError(f"init_adapter_dir {path}: adapter has {theirs}, the trainer's LoRA settings say {mine}")
        return PeftModel.from_pretrained(model, str(path), is_trainable=True), None

    def build_trainer(self, source: ModelSource, cache_dir: str, examples: list[dict], output_dir: str,
                      init_adapter_dir: str | None = None):
        """A ready-to-run TRL SFTTrainer (model with LoRA, tokenised dataset). :meth:`train` uses it;
        it is public so that callers (and tests) can inspect or extend the training run."""
        from datasets import Dataset
        from trl import SFTTrainer

        clean = _validate_examples(examples)
        model, tokenizer = self.load_model(source, cache_dir, clean)
        model, peft_config = self.peft_inputs(model, init_adapter_dir)
        with warnings.catch_warnings():
            # peft probes the deprecated `is_gradient_checkpointing` property (transformers 5.x)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                    category=FutureWarning)
            trainer = SFTTrainer(
                model=model,
                args=self.sft_config(output_dir, n_examples=len(clean)),
                train_dataset=Dataset.from_list(clean),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
        if len(trainer.train_dataset) == 0:  # TRL dropped every example: say so before torch fails on it
            raise StageError(f"no training examples left: TRL dropped all {len(clean)} (no completion tokens within "
                             f"max_length={self.args.max_length}); shorten the prompts or raise trainer.args.max_length")
        return trainer

    def _after_train(self, trainer, output_dir: str) -> None:
        """Subclass hook for extra files, run on rank 0 after the adapter is saved. Facts about the
        run go through :meth:`provenance` (one place: moloch_training.json and train_metrics.json)."""

    # ----------------------------------------------------------------- train
    def train(self, source: ModelSource, cache_dir: str, examples: list[dict], output_dir: str,
              init_adapter_dir: str | None = None) -> TrainResult:
        """Fine-tune a LoRA adapter on ``examples``; save only the adapter into ``output_dir``.
        ``init_adapter_dir``: continue training that saved adapter instead of a fresh one."""
        t0 = time.perf_counter()
        trainer = self.build_trainer(source, cache_dir, examples, output_dir, init_adapter_dir=init_adapter_dir)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                        category=FutureWarning)
                out = trainer.train()
            trainer.save_model(str(output_dir))  # PEFT model: adapter only; rank 0 only
            n_used = len(trainer.train_dataset)
            if n_used < len(examples):
                logger.warning("%d of %d training examples were dropped by TRL (no completion "
                               "tokens left, e.g. after truncation to max_length=%d)",
                               len(examples) - n_used, len(examples), self.args.max_length)
            result = TrainResult(
                adapter_dir=str(output_dir),
                n_examples=n_used,
                steps=int(trainer.state.global_step),
                train_loss=float(out.training_loss) if out.training_loss is not None else None,
                runtime_s=round(time.perf_counter() - t0, 3),
                log_history=[dict(h) for h in trainer.state.log_history],
            )
            if trainer.is_world_process_zero():
                info = {"source": source.to_dict(), "lora": asdict(self.lora), "init_adapter_dir": init_adapter_dir,
                        "train": asdict(self.args), "resolved": self.resolved(),
                        "result": {k: v for k, v in result.to_dict().items() if k != "log_history"}}
                self._after_train(trainer, str(output_dir))
                info.update(self.provenance() or {})
                Path(output_dir, "moloch_training.json").write_text(json.dumps(info, indent=2, default=str))
            return result
        finally:
            del trainer
            free_torch_memory()

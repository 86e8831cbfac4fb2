"""LoRA DPO with TRL's ``DPOTrainer`` on (winner, loser) pairs from the collection's votes (issue 10).

    python run.py method=dpo
    python run.py method=dpo trainer.args.beta=0.3 method.builder.min_margin=3
    python run.py -m method=rft,tfb,dpo

Examples are TRL *conversational preference* records (from
:class:`DPOPairBuilder` below)::

    {"prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "chosen": [{"role": "assistant", "content": <winner's full completion>}],
     "rejected": [{"role": "assistant", "content": <loser's full completion>}]}

The policy is the base model with a fresh LoRA adapter (same LoRA values as the SFT trainer,
``conf/trainer/lora.yaml``). The reference model is the *same* weights with the adapter disabled:
TRL does this whenever it gets a ``peft_config`` and no ``ref_model`` (``use_adapter(model, None)``
around the reference forward), so no second copy of the model is held. With ``init_adapter_dir``
(multi-round: continue from the previous round's adapter) TRL copies that adapter into a frozen
``ref`` adapter, so the reference is the previous round's agent, the usual iterative-DPO anchor.

Memory on CPU: the configured ``per_device_train_batch_size × gradient_accumulation_steps`` is the
effective batch; on CPU it runs as micro-batches of ``max_micro_batch_size`` (1 by default) with more
accumulation (the same optimiser steps and, for a mean loss, the same gradients). A DPO
micro-batch holds chosen and rejected sequences plus a no-grad reference pass; their float32
vocabulary logits dominate: ``bench/dpo_memory.py`` measured SmolLM2-135M peak RSS 2.4 GB with
micro-batch 1 vs 5.5 GB with the whole batch of 4, 9 % slower per step.

Saved like the SFT trainer: the adapter only (``adapter_config.json`` +
``adapter_model.safetensors``), loadable by ``PeftModel.from_pretrained`` and the generators, plus
``moloch_training.json``; :meth:`LoraDPOTrainer.train` returns the same ``TrainResult``.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
import random
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any, ClassVar

from moloch_exp.agents.model_source import ModelSource
from moloch_exp.errors import ConfigError, DataError, StageError
from moloch_exp.records import Anchor, Candidate, Vote

from .builders import outcomes
from .trainer import LoraSettings, LoraSFTTrainer, TrainSettings, settings_from

if TYPE_CHECKING:
    from moloch_exp.protocols import Builder

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class DPOSettings(TrainSettings):
    """Optimisation settings for DPO: the SFT ones plus the preference loss."""

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (no paper value; DPO runs "
                                                                 "far below SFT's 2e-4, LoRA above full fine-tuning's ~5e-7)."})
    beta: float = field(default=0.1, metadata={"help": "DPO β: strength of the pull towards the reference "
                                                       "(higher: the policy stays closer to the base)."})
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"], metadata={
        "help": "TRL loss(es): sigmoid (the DPO paper) | ipo | hinge | robust | ... (see DPOConfig.loss_type)."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "robust/exo only: assumed probability that a vote label is flipped, in [0, 0.5)."})
    disable_dropout: bool = field(default=True, metadata={
        "help": "Switch all dropout off, LoRA dropout included (TRL's default: policy and reference "
                "log-probs are then comparable)."})


def _validate_pairs(examples: list[dict]) -> list[dict]:
    if not examples:
        raise StageError("no DPO pairs: the pair list is empty (nothing to train on)")
    clean = []
    for i, ex in enumerate(examples):
        for key in ("prompt", "chosen", "rejected"):
            msgs = ex.get(key)
            if not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in msgs):
                raise DataError(f"DPO pair {i}: {key!r} must be a non-empty list of {{'role', 'content'}} "
                                 f"messages, got {msgs!r:.200}")
        if ex["chosen"][-1]["role"] != "assistant" or ex["rejected"][-1]["role"] != "assistant":
            raise DataError(f"DPO pair {i}: chosen and rejected must end with an assistant message")
        clean.append({k: [dict(m) for m in ex[k]] for k in ("prompt", "chosen", "rejected")})
    return clean


class LoraDPOTrainer(LoraSFTTrainer):
    """TRL DPOTrainer + PEFT LoRA; see the module docstring. Same ``train`` call and result as
    :class:`~moloch_exp.training.trainer.LoraSFTTrainer`, on preference pairs."""

    example_format = "preference"

    def __init__(self, lora: LoraSettings | dict | None = None, args: DPOSettings | dict | None = None):
        self.lora = settings_from(LoraSettings, lora, "LoRA")
        self.args = settings_from(DPOSettings, args, "DPO training")
        if isinstance(self.args.loss_type, str):
            self.args.loss_type = [self.args.loss_type]
        self.args.loss_type = list(self.args.loss_type)
        unknown = [t for t in self.args.loss_type if t not in DPO_LOSSES]
        if unknown:
            raise ConfigError(f"trainer.args.loss_type: unknown {unknown}; one or more of {list(DPO_LOSSES)}")
        if self.args.beta <= 0:
            raise ConfigError(f"trainer.args.beta must be > 0, got {self.args.beta}")
        if not 0.0 <= self.args.label_smoothing < 0.5:
            raise ConfigError(f"trainer.args.label_smoothing must be in [0, 0.5), got {self.args.label_smoothing}")
        self._run_info: dict[str, Any] = {}  # set by build_trainer: what provenance() reports

    def identity(self) -> dict[str, Any]:
        """Cache-key material: the configured LoRA and DPO settings (never state set by training)."""
        return {"type": "lora_dpo", "lora": asdict(self.lora), "args": asdict(self.args)}

    def dpo_config(self, output_dir: str, n_examples: int | None = None):
        from trl import DPOConfig

        a = self.args
        return DPOConfig(**self.trl_args(DPOConfig, output_dir, n_examples), beta=a.beta,
                         loss_type=list(a.loss_type), label_smoothing=a.label_smoothing,
                         disable_dropout=a.disable_dropout)

    def build_trainer(self, source: ModelSource, cache_dir: str, examples: list[dict], output_dir: str,
                      init_adapter_dir: str | None = None):
        """A ready-to-run TRL DPOTrainer (policy = model + LoRA, reference = adapter disabled, or the
        initial adapter when continuing one)."""
        from datasets import Dataset
        from trl import DPOTrainer

        clean = _validate_pairs(examples)
        model, tokenizer = self.load_model(source, cache_dir, clean)
        model, peft_config = self.peft_inputs(model, init_adapter_dir)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trainer = DPOTrainer(
                model=model,
                ref_model=None,
                args=self.dpo_config(output_dir, n_examples=len(clean)),
                train_dataset=Dataset.from_list(clean),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
        auto = self.resolved()
        self._run_info = {"reference": "initial adapter" if "ref" in getattr(trainer.model, "peft_config", {})
                          else "base (adapter disabled)", "micro_batch": auto["per_device_micro_batch"],
                          "gradient_accumulation_steps": auto["gradient_accumulation_steps"]}
        return trainer

    def provenance(self) -> dict[str, Any] | None:
        """What the last run's reference was and how its batch was split (train_metrics.json)."""
        return {"dpo": self._run_info} if self._run_info else None

    def _after_train(self, trainer, output_dir: str) -> None:
        # Continuing an adapter, TRL keeps a frozen copy named "ref" and save_pretrained writes it to
        # output_dir/ref; only the trained ("default") adapter belongs to this round.
        ref_copy = Path(output_dir) / "ref"
        if ref_copy.is_dir():
            shutil.rmtree(ref_copy)


DPO_TIE_RULES = ("drop", "random")
DPO_PAIRINGS = ("each_loser", "worst")


@dataclass
class DPOPairBuilder:
    """Preference pairs for DPO: per anchor, (prompt, chosen = the winner's full completion,
    rejected = a loser's full completion), from the collection's candidates and votes. No extra
    audience calls: the votes are the ones RFT/TFB use.

    Only valid votes count (invalid and failed ballots are counted in the stats, never used). The
    players of a match are the candidates shown on its ballots (``Vote.order``); a candidate whose
    extraction failed was never shown and is never a rejected answer.

    * margin: the winner's valid votes minus the runner-up's (K=2: |votes_A - votes_B|). A match
      with margin 0 is a tie and goes to ``tie_rule``; a decided match with margin < ``min_margin``
      is dropped (``min_margin=3`` drops 11-9 matches and keeps 12-8).
    * tie_rule: ``drop`` (default) drops tied matches; ``random`` lets a seeded choice among the
      tied top candidates be the chosen one, so its pairs against the other tied candidates are
      coin-flip labels (as RFT's ``random`` trains a coin-flip winner) and ``min_margin`` does not
      apply to ties. RFT's ``all`` (train every tied winner) has no pair analogue -- every tied
      winner against every other would pair equals in both directions, gradients that cancel --
      so it is refused.
    * pairing (K > 2): ``each_loser`` (default; K-1 pairs per anchor, the winner against every
      other player) or ``worst`` (one pair, the winner against the fewest-voted player; a tie for
      worst is broken by a seeded choice). For K = 2 both give the same single pair.
    """

    tie_rule: str = field(default="drop", metadata={"help": "drop | random (seeded winner among the tied top; coin-flip pairs). 'all' has no pair meaning and is refused"})
    min_margin: int = field(default=1, metadata={"help": "minimum vote margin (winner minus runner-up, valid votes) for a decided match to give pairs; 1 keeps every decided match, 3 drops 11-9"})
    pairing: str = field(default="each_loser", metadata={"help": "K > 2: each_loser (winner vs every other player) | worst (winner vs the fewest-voted player)"})
    replicate: int = field(default=1, metadata={"help": "copies of the pair set (rft's replicate: same number of passes over the data)"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle the pairs (seeded)"})
    seed: int = field(default=0, metadata={"help": "seed for tie breaks and the shuffle"})
    needs_collection: ClassVar[bool] = True
    example_format: ClassVar[str] = "preference"  # TRL prompt/chosen/rejected records: needs trainer=dpo

    def __post_init__(self) -> None:
        if self.tie_rule == "all":
            raise ConfigError("method.builder.tie_rule=all: a DPO pair needs one chosen and one rejected answer; "
                              "use drop or random")
        if self.tie_rule not in DPO_TIE_RULES:
            raise ConfigError(f"method.builder.tie_rule must be one of {DPO_TIE_RULES}, not {self.tie_rule!r}")
        if self.pairing not in DPO_PAIRINGS:
            raise ConfigError(f"method.builder.pairing must be one of {DPO_PAIRINGS}, not {self.pairing!r}")
        if int(self.min_margin) != self.min_margin or self.min_margin < 1:
            raise ConfigError(f"method.builder.min_margin must be an integer >= 1 (ties are tie_rule's), not {self.min_margin!r}")
        if self.replicate < 1:
            raise ConfigError("method.builder.replicate must be >= 1")

    def identity(self) -> dict:
        """Stage-cache key material: everything that changes the pairs."""
        return {"type": "dpo", "tie_rule": self.tie_rule, "min_margin": int(self.min_margin),
                "pairing": self.pairing, "replicate": self.replicate, "shuffle": self.shuffle, "seed": self.seed}

    def includes(self) -> dict[str, "Builder"]:
        return {}

    def check(self) -> None:
        """Nothing to check before work: the pairs come from the collection."""

    def planned_examples(self, n_matches: int, k: int, n_voters: int) -> int:
        """Every match decided: the winner against each loser (each_loser) or the worst one, replicated."""
        return n_matches * ((k - 1) if self.pairing == "each_loser" else min(1, k - 1)) * self.replicate

    def build(self, candidates: list[Candidate], votes: list[Vote], task=None,
              anchors: dict[str, Anchor] | None = None) -> tuple[list[dict], dict]:
        by_key = {(c.anchor_id, c.index): c for c in candidates}
        players: dict[str, set[int]] = defaultdict(set)
        for v in votes:
            players[v.anchor_id].update(v.order)
        rng = random.Random(self.seed)
        pairs, stats = [], Counter()
        voted = set()
        for out in outcomes(votes):
            voted.add(out.anchor_id)
            stats["anchors"] += 1
            stats["invalid_votes"] += out.invalid
            if not out.winners:
                stats["no_valid_votes"] += 1
                continue
            counts = {i: out.counts.get(i, 0) for i in sorted(players[out.anchor_id] | set(out.counts))}
            if len(counts) < 2:
                stats["too_few_messages"] += 1
                continue
            if len(out.winners) > 1:
                stats["ties"] += 1
                if self.tie_rule == "drop":
                    stats["ties_dropped"] += 1
                    continue
                winner = rng.choice(out.winners)
            else:
                winner = out.winners[0]
                runner_up = max(c for i, c in counts.items() if i != winner)
                if counts[winner] - runner_up < self.min_margin:
                    stats["margin_dropped"] += 1
                    continue
            losers = [i for i in counts if i != winner]
            if self.pairing == "worst":
                fewest = min(counts[i] for i in losers)
                losers = [rng.choice([i for i in losers if counts[i] == fewest])]
            chosen = by_key[(out.anchor_id, winner)]
            for loser in losers:
                rejected = by_key[(out.anchor_id, loser)]
                pairs.append({"prompt": chosen.prompt,
                              "chosen": [{"role": "assistant", "content": chosen.completion}],
                              "rejected": [{"role": "assistant", "content": rejected.completion}],
                              "kind": "dpo", "anchor_id": out.anchor_id,
                              "votes": [counts[winner], counts[loser]]})
            stats["matches_used"] += 1
        # Anchors whose candidates never made a match (fewer than 2 extracted messages): no votes at all.
        stats["too_few_messages"] += len({c.anchor_id for c in candidates} - voted)
        stats["pairs_unique"] = len(pairs)
        pairs = pairs * self.replicate
        if self.shuffle:
            rng.shuffle(pairs)
        stats["pairs"] = len(pairs)
        return pairs, dict(stats)

"""LoRA KTO with TRL's ``KTOTrainer``: each match's winner is a desirable answer, its losers undesirable
(issue 21), from the same collection and votes as rft and dpo (no extra audience calls).

    python run.py method=kto
    python run.py method=kto trainer.args.beta=0.3 method.builder.min_margin=3
    python run.py method=kto collect.candidates_per_anchor=3 method.builder.balance=upsample
    python run.py -m method=rft,dpo,kto

Examples are TRL *conversational unpaired preference* records (from :class:`KTOBuilder` below)::

    {"prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "completion": [{"role": "assistant", "content": <a player's full completion>}],
     "label": true}      # true: the match's winner; false: a loser of the same match

The loss (TRL's ``loss_type="kto"``, Eq. 7 of the KTO paper) per example is
``w(y) * (1 - sigmoid(beta * (r - KL)))`` for a desirable and ``w(y) * (1 - sigmoid(beta * (KL - r)))``
for an undesirable answer, with ``r = log pi(y|x) - log pi_ref(y|x)``, ``w`` = ``desirable_weight`` /
``undesirable_weight``, and ``KL`` a detached estimate from mismatched (prompt, completion) pairs of the
same forward batch (clamped at 0). Before the first update the policy is the reference (LoRA B starts at
zero), so r = 0 and KL = 0 and each example's loss is ``w(y) / 2``: the first logged loss is
``(desirable_weight * n_desirable + undesirable_weight * n_undesirable) / (2 n)`` over that step's
examples (tests/training/test_kto_trainer.py checks it).

The policy is the base model with a fresh LoRA adapter (the LoRA values of ``conf/trainer/lora.yaml``);
the reference is the same weights with the adapter disabled (TRL, given a ``peft_config`` and no
``ref_model``), or, continuing a saved adapter (``init_adapter_dir``, later rounds), a frozen copy of
it, as in :mod:`moloch_exp.training.dpo`.

Batches: the configured ``per_device_train_batch_size x gradient_accumulation_steps`` is the effective
batch; on CPU it runs as micro-batches of at most ``max_micro_batch_size`` (default ``KTO_CPU_MICRO_BATCH``
= 4) with more accumulation. Unlike SFT and DPO, a KTO micro-batch is not only a memory choice: TRL
estimates the KL term inside each forward batch (each prompt paired with the previous example's
completion), so it needs at least 2 sequences (refused otherwise) and TRL recommends at least 4. TRL
samples the examples in order (``train_sampling_strategy="sequential"``, required for the KL pairs), so
the builder's seeded shuffle sets the batches. Memory (``python bench/dpo_memory.py --method kto``,
SmolLM2-135M, 8 sequences a step): micro-batch 4 peaks at 3.5 GB RSS vs 5.4 GB for the whole batch of 8
(DPO's micro-batch of 1 pair: 2.4 GB); a KTO micro-batch also runs its KL sequences, without gradients.

Unbalanced classes: with K = 2 every used match gives one desirable and one undesirable answer. With
K > 2 and ``losers: each_loser`` there are K-1 undesirable per desirable; TRL's documentation asks that
``desirable_weight x n_desirable : undesirable_weight x n_undesirable`` lie in 1:1 to 4:3, so either
``method.builder.balance=upsample|downsample`` or ``trainer.args.desirable_weight=<K-1>``.
train_metrics.json (``kto``) records the counts, the weighted ratio and whether it is in TRL's range.
"""

from __future__ import annotations

import random
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from moloch_exp.agents.model_source import ModelSource
from moloch_exp.errors import ConfigError, DataError, StageError
from moloch_exp.records import Anchor, Candidate, Vote

from .dpo import DPOPairBuilder
from .trainer import LoraSettings, LoraSFTTrainer, TrainSettings, settings_from

if TYPE_CHECKING:
    from moloch_exp.protocols import Builder


KTO_LOSSES = ("kto", "apo_zero_unpaired")  # KTOConfig.loss_type
#: CPU micro-batch: TRL's KL estimate needs >= 2 sequences per forward batch and it recommends >= 4.
KTO_CPU_MICRO_BATCH = 4
#: TRL's recommended range for (desirable_weight x n_desirable) / (undesirable_weight x n_undesirable).
TRL_WEIGHT_RATIO = (1.0, 4 / 3)


@dataclass
class KTOSettings(TrainSettings):
    """Optimisation settings for KTO: the SFT ones plus TRL's KTO loss settings."""

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (no paper value; as DPO's: "
                                                                 "TRL's 5e-7..5e-6 is for full fine-tuning, LoRA runs higher)."})
    max_micro_batch_size: int | None = field(default=None, metadata={
        "help": "Largest forward batch; None: 4 on CPU (KTO_CPU_MICRO_BATCH), the whole batch on GPU. KTO estimates "
                "its KL term inside each forward batch, so it must be >= 2 (TRL recommends >= 4)."})
    beta: float = field(default=0.1, metadata={"help": "KTO beta: strength of the pull towards the reference "
                                                       "(higher: the policy stays closer to the base)."})
    loss_type: str = field(default="kto", metadata={
        "help": "kto (the KTO paper, with the KL reference point) | apo_zero_unpaired (no KL term)."})
    desirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the winners' losses (raise it when winners are the rarer class, e.g. K-1 with K > 2)."})
    undesirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the losers' losses (raise it when losers are the rarer class)."})
    disable_dropout: bool = field(default=True, metadata={
        "help": "Switch all dropout off, LoRA dropout included (TRL's default: policy and reference "
                "log-probs are then comparable)."})


def _validate_unpaired(examples: list[dict]) -> list[dict]:
    if not examples:
        raise StageError("no KTO examples: the example list is empty (nothing to train on)")
    clean = []
    for i, ex in enumerate(examples):
        for key in ("prompt", "completion"):
            msgs = ex.get(key)
            if not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in msgs):
                raise DataError(f"KTO example {i}: {key!r} must be a non-empty list of {{'role', 'content'}} "
                                f"messages, got {msgs!r:.200}")
        if ex["completion"][-1]["role"] != "assistant":
            raise DataError(f"KTO example {i}: the completion must end with an assistant message")
        if not isinstance(ex.get("label"), bool):
            raise DataError(f"KTO example {i}: 'label' must be true (desirable) or false (undesirable), "
                            f"got {ex.get('label')!r}")
        clean.append({"prompt": [dict(m) for m in ex["prompt"]], "completion": [dict(m) for m in ex["completion"]],
                      "label": ex["label"]})
    return clean


def weight_balance(n_desirable: int, n_undesirable: int, desirable_weight: float,
                   undesirable_weight: float) -> dict[str, Any]:
    """The class counts and the weighted ratio (desirable_weight x n_desirable) / (undesirable_weight x
    n_undesirable), which TRL's documentation (Eq. 8 of the KTO paper) asks to lie in 1..4/3."""
    d, u = desirable_weight * n_desirable, undesirable_weight * n_undesirable
    ratio = d / u if u > 0 else None
    return {"desirable": n_desirable, "undesirable": n_undesirable, "desirable_weight": desirable_weight,
            "undesirable_weight": undesirable_weight, "weighted_ratio": None if ratio is None else round(ratio, 4),
            "in_trl_range": ratio is not None and TRL_WEIGHT_RATIO[0] <= ratio <= TRL_WEIGHT_RATIO[1] + 1e-9}


class LoraKTOTrainer(LoraSFTTrainer):
    """TRL KTOTrainer + PEFT LoRA; see the module docstring. Same ``train`` call and result as
    :class:`~moloch_exp.training.trainer.LoraSFTTrainer`, on unpaired preference examples."""

    example_format = "unpaired_preference"
    cpu_micro_batch = KTO_CPU_MICRO_BATCH

    def __init__(self, lora: LoraSettings | dict | None = None, args: KTOSettings | dict | None = None):
        self.lora = settings_from(LoraSettings, lora, "LoRA")
        self.args = settings_from(KTOSettings, args, "KTO training")
        a = self.args
        if a.loss_type not in KTO_LOSSES:
            raise ConfigError(f"trainer.args.loss_type: unknown {a.loss_type!r}; one of {list(KTO_LOSSES)}")
        if a.beta <= 0:
            raise ConfigError(f"trainer.args.beta must be > 0, got {a.beta}")
        if a.desirable_weight <= 0 or a.undesirable_weight <= 0:
            raise ConfigError(f"trainer.args.desirable_weight and undesirable_weight must be > 0, got "
                              f"{a.desirable_weight} and {a.undesirable_weight}")
        if a.loss_type == "kto":
            micro = min(self.micro_batches(False)[0], self.micro_batches(True)[0])
            if micro < 2:
                raise ConfigError(
                    f"trainer.args: KTO estimates its KL term inside each forward batch, which needs at least 2 "
                    f"sequences, but per_device_train_batch_size={a.per_device_train_batch_size} with "
                    f"max_micro_batch_size={a.max_micro_batch_size} gives micro-batches of {micro}; use an even "
                    "batch and a max_micro_batch_size >= 2 (TRL recommends >= 4), or loss_type=apo_zero_unpaired")
        self._run_info: dict[str, Any] = {}  # set by build_trainer: what provenance() reports

    def identity(self) -> dict[str, Any]:
        """Cache-key material: the configured LoRA and KTO settings (never state set by training)."""
        return {"type": "lora_kto", "lora": asdict(self.lora), "args": asdict(self.args)}

    def kto_config(self, output_dir: str, n_examples: int | None = None):
        from trl import KTOConfig

        a = self.args
        return KTOConfig(**self.trl_args(KTOConfig, output_dir, n_examples), beta=a.beta, loss_type=a.loss_type,
                         desirable_weight=a.desirable_weight, undesirable_weight=a.undesirable_weight,
                         disable_dropout=a.disable_dropout)

    def build_trainer(self, source: ModelSource, cache_dir: str, examples: list[dict], output_dir: str,
                      init_adapter_dir: str | None = None):
        """A ready-to-run TRL KTOTrainer (policy = model + LoRA, reference = adapter disabled, or the
        initial adapter when continuing one)."""
        from datasets import Dataset
        from trl import KTOTrainer

        clean = _validate_unpaired(examples)
        model, tokenizer = self.load_model(source, cache_dir, clean)
        model, peft_config = self.peft_inputs(model, init_adapter_dir)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trainer = KTOTrainer(
                model=model,
                ref_model=None,
                args=self.kto_config(output_dir, n_examples=len(clean)),
                train_dataset=Dataset.from_list(clean),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
        if len(trainer.train_dataset) == 0:  # TRL dropped every example (its prompt alone fills max_length)
            raise StageError(f"no KTO examples left: TRL dropped all {len(clean)} (the prompt alone fills "
                             f"max_length={self.args.max_length}); raise trainer.args.max_length")
        labels = trainer.train_dataset["label"]
        auto = self.resolved()
        self._run_info = {"reference": "initial adapter" if "ref" in getattr(trainer.model, "peft_config", {})
                          else "base (adapter disabled)", "micro_batch": auto["per_device_micro_batch"],
                          "gradient_accumulation_steps": auto["gradient_accumulation_steps"],
                          **weight_balance(sum(labels), len(labels) - sum(labels),
                                           self.args.desirable_weight, self.args.undesirable_weight)}
        return trainer

    def provenance(self) -> dict[str, Any] | None:
        """The last run's reference, batch split and class balance (train_metrics.json)."""
        return {"kto": self._run_info} if self._run_info else None

    def _after_train(self, trainer, output_dir: str) -> None:
        # Continuing an adapter, TRL keeps a frozen copy named "ref"; only "default" belongs to this round.
        ref_copy = Path(output_dir) / "ref"
        if ref_copy.is_dir():
            shutil.rmtree(ref_copy)


KTO_BALANCE = ("none", "downsample", "upsample")
KTO_LOSERS = ("each_loser", "worst")


@dataclass
class KTOBuilder:
    """Unpaired preference examples for KTO: per used match, the winner's full completion labelled
    desirable and the losers' labelled undesirable, from the collection's candidates and votes (no extra
    audience calls). Which matches are used, and who wins a tie, is DPO's rule
    (:class:`~moloch_exp.training.dpo.DPOPairBuilder`, with the same settings): only valid votes count,
    ``min_margin`` drops close matches, ``tie_rule`` is ``drop`` or ``random`` (a seeded winner among the
    tied, so its label against the other tied answers is a coin flip).

    * losers (K > 2): ``each_loser`` (every other player undesirable) or ``worst`` (the fewest-voted one).
    * balance: ``none`` keeps every example (K = 2 is balanced by construction); ``downsample`` drops a
      seeded sample of the commoner class, ``upsample`` repeats a seeded sample of the rarer class, until
      both classes have the same count (before ``replicate``).
    """

    tie_rule: str = field(default="drop", metadata={"help": "drop | random (seeded winner among the tied top; coin-flip labels). 'all' is refused as in dpo"})
    min_margin: int = field(default=1, metadata={"help": "minimum vote margin (winner minus runner-up, valid votes) for a decided match to give examples"})
    losers: str = field(default="each_loser", metadata={"help": "K > 2: each_loser (every other player undesirable) | worst (only the fewest-voted)"})
    balance: str = field(default="none", metadata={"help": "none | downsample (drop the commoner class) | upsample (repeat the rarer class) to equal counts"})
    replicate: int = field(default=1, metadata={"help": "copies of the example set (rft's replicate: same number of passes over the data)"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle the examples (seeded); TRL then reads them in order, so this sets the batches"})
    seed: int = field(default=0, metadata={"help": "seed for tie breaks, balancing and the shuffle"})
    needs_collection: ClassVar[bool] = True
    example_format: ClassVar[str] = "unpaired_preference"  # TRL prompt/completion/label records: needs trainer=kto

    def __post_init__(self) -> None:
        if self.losers not in KTO_LOSERS:
            raise ConfigError(f"method.builder.losers must be one of {KTO_LOSERS}, not {self.losers!r}")
        if self.balance not in KTO_BALANCE:
            raise ConfigError(f"method.builder.balance must be one of {KTO_BALANCE}, not {self.balance!r}")
        if self.replicate < 1:
            raise ConfigError("method.builder.replicate must be >= 1")
        # The match rule, validated (tie_rule, min_margin) by the DPO builder it is taken from.
        self._matches = DPOPairBuilder(tie_rule=self.tie_rule, min_margin=self.min_margin, pairing=self.losers,
                                       replicate=1, shuffle=False, seed=self.seed)

    def identity(self) -> dict:
        """Stage-cache key material: everything that changes the examples."""
        return {"type": "kto", "tie_rule": self.tie_rule, "min_margin": int(self.min_margin), "losers": self.losers,
                "balance": self.balance, "replicate": self.replicate, "shuffle": self.shuffle, "seed": self.seed}

    def includes(self) -> dict[str, "Builder"]:
        return {}

    def check(self) -> None:
        """Nothing to check before work: the examples come from the collection."""

    def planned_examples(self, n_matches: int, k: int, n_voters: int) -> int:
        """Every match decided: its winner desirable, its losers (each_loser) or the worst undesirable; balanced
        as ``balance`` says, replicated."""
        desirable, undesirable = n_matches, n_matches * ((k - 1) if self.losers == "each_loser" else min(1, k - 1))
        if self.balance == "downsample" and desirable and undesirable:
            desirable = undesirable = min(desirable, undesirable)
        elif self.balance == "upsample" and desirable and undesirable:
            desirable = undesirable = max(desirable, undesirable)
        return (desirable + undesirable) * self.replicate

    def build(self, candidates: list[Candidate], votes: list[Vote], task=None,
              anchors: dict[str, Anchor] | None = None) -> tuple[list[dict], dict]:
        pairs, pair_stats = self._matches.build(candidates, votes, task, anchors)
        stats = {k: v for k, v in pair_stats.items() if k not in ("pairs", "pairs_unique")}
        desirable, undesirable, seen = [], [], set()
        for p in pairs:  # a winner is in one pair per loser: one desirable example per match
            if p["anchor_id"] not in seen:
                seen.add(p["anchor_id"])
                desirable.append(self._example(p, "chosen", True, p["votes"][0]))
            undesirable.append(self._example(p, "rejected", False, p["votes"][1]))
        rng = random.Random(self.seed)
        stats["desirable_unique"], stats["undesirable_unique"] = len(desirable), len(undesirable)
        if self.balance != "none" and desirable and undesirable and len(desirable) != len(undesirable):
            rare, common = sorted((desirable, undesirable), key=len)
            if self.balance == "downsample":
                common[:] = rng.sample(common, len(rare))
            else:
                rare.extend(rng.choices(rare, k=len(common) - len(rare)))
        examples = (desirable + undesirable) * self.replicate
        if self.shuffle:
            rng.shuffle(examples)
        stats["desirable"] = len(desirable) * self.replicate
        stats["undesirable"] = len(undesirable) * self.replicate
        stats["examples"] = len(examples)
        return examples, stats

    @staticmethod
    def _example(pair: dict, side: str, label: bool, votes: int) -> dict:
        return {"prompt": pair["prompt"], "completion": pair[side], "label": label, "kind": "kto",
                "anchor_id": pair["anchor_id"], "votes": votes}

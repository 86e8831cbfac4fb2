"""Masked LoRA: train exactly ``n`` LoRA parameters (scalar entries), chosen by a seeded random mask.

All LoRA matrices of the adapter are flattened in a fixed order (sorted parameter names); a
``torch.randperm`` with ``mask_seed`` picks ``n`` entries that may train. Everything else stays at
its initial value *bit for bit*:

* a gradient hook multiplies every LoRA gradient by its 0/1 mask (so gradient clipping and the
  optimiser moments only ever see trainable entries), and
* after every optimiser step the masked entries are restored from a saved copy of their initial
  values -- AdamW's decoupled weight decay (and any other update rule) moves a parameter even
  when its gradient is zero, so masking gradients alone is not enough.

``n_trainable="all"`` (or ``n`` at least the number of LoRA entries) trains the whole adapter, as
:class:`~moloch_exp.training.trainer.LoraSFTTrainer` does. The chosen flat indices are saved next
to the adapter (``lora_mask.safetensors`` + ``lora_mask.json``) so an analysis can tell which
entries were free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .trainer import LoraSettings, LoraSFTTrainer, TrainSettings


def lora_parameters(model) -> list[tuple[str, Any]]:
    """Trainable LoRA parameters of a PEFT model, in the fixed (sorted-name) mask order."""
    return sorted(((n, p) for n, p in model.named_parameters() if "lora_" in n and p.requires_grad),
                  key=lambda item: item[0])


def choose_mask(sizes: list[int], n_trainable: int | str, seed: int):
    """Flat indices (sorted int64 tensor) of the trainable entries, or None for "all"."""
    import torch

    total = int(sum(sizes))
    if isinstance(n_trainable, str):
        if n_trainable != "all":
            raise ValueError(f"n_trainable must be an integer or 'all', got {n_trainable!r}")
        return None
    n = int(n_trainable)
    if n < 0:
        raise ValueError(f"n_trainable must be >= 0, got {n}")
    if n >= total:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(total, generator=gen)[:n]).values


class _MaskEnforcer:
    """Gradient hooks + post-step restore for a list of (param, bool mask) pairs."""

    def __init__(self, params_and_masks) -> None:
        import torch

        self.items = []
        self.handles = []
        for param, mask in params_and_masks:
            mask = mask.to(param.device)
            frozen = param.detach().clone()
            self.items.append((param, mask, frozen))
            grad_mask = mask.to(param.dtype)
            self.handles.append(param.register_hook(lambda g, m=grad_mask: g * m.to(g.dtype)))
        self._torch = torch

    @property
    def callback(self):
        from transformers import TrainerCallback

        enforcer = self

        class RestoreMaskedLora(TrainerCallback):
            def on_optimizer_step(self, args, state, control, **kwargs):
                enforcer.restore()

        return RestoreMaskedLora()

    def restore(self) -> None:
        with self._torch.no_grad():
            for param, mask, frozen in self.items:
                param.copy_(self._torch.where(mask, param, frozen))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class MaskedLoraSFTTrainer(LoraSFTTrainer):
    """:class:`LoraSFTTrainer` that trains exactly ``n_trainable`` LoRA entries."""

    def __init__(self, lora: LoraSettings | dict | None = None, args: TrainSettings | dict | None = None,
                 n_trainable: int | str = "all", mask_seed: int = 0) -> None:
        super().__init__(lora, args)
        choose_mask([1], n_trainable, 0)  # validate early
        self.n_trainable = n_trainable
        self.mask_seed = int(mask_seed)
        self.mask_info: dict[str, Any] = {}
        self._indices = None
        self._enforcer: _MaskEnforcer | None = None

    def identity(self) -> dict[str, Any]:
        return super().identity() | {"type": "masked_lora_sft", "n_trainable": self.n_trainable,
                                     "mask_seed": self.mask_seed}

    def provenance(self) -> dict[str, Any] | None:
        """The mask actually trained (without the per-parameter lists)."""
        return {"mask": {k: v for k, v in self.mask_info.items() if k not in ("parameter_order", "parameter_sizes")}
                or None}

    def build_trainer(self, source, cache_dir, examples, output_dir, init_adapter_dir=None):
        import torch

        trainer = super().build_trainer(source, cache_dir, examples, output_dir, init_adapter_dir=init_adapter_dir)
        params = lora_parameters(trainer.model)
        if not params:
            raise RuntimeError("masked LoRA: the model has no trainable LoRA parameters")
        sizes = [p.numel() for _, p in params]
        total = int(sum(sizes))
        indices = choose_mask(sizes, self.n_trainable, self.mask_seed)
        self._indices = indices
        self.mask_info = {"n_trainable_requested": self.n_trainable, "mask_seed": self.mask_seed,
                          "n_lora_parameters": total,
                          "n_trainable": total if indices is None else int(indices.numel()),
                          "parameter_order": [n for n, _ in params], "parameter_sizes": sizes}
        if indices is None:
            return trainer
        flat = torch.zeros(total, dtype=torch.bool)
        flat[indices] = True
        pairs, offset = [], 0
        for (_, p), size in zip(params, sizes):
            pairs.append((p, flat[offset:offset + size].view_as(p)))
            offset += size
        self._enforcer = _MaskEnforcer(pairs)
        trainer.add_callback(self._enforcer.callback)
        return trainer

    def _after_train(self, trainer, output_dir: str) -> None:
        from safetensors.torch import save_file

        if self._indices is not None:
            save_file({"trainable_flat_indices": self._indices.contiguous()},
                      str(Path(output_dir) / "lora_mask.safetensors"))
        Path(output_dir, "lora_mask.json").write_text(json.dumps(self.mask_info, indent=2))
        if self._enforcer is not None:
            self._enforcer.remove()

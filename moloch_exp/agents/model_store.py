"""The machine's store of converted agent models, filled once by ``scripts/setup.sh``: a run with a fresh cache
directory (a new checkout, a test session, ``bench/peak_memory.py --fresh-cache``) loads the embedded default
without converting its GGUF file again (about 15 s on 2 cores, 30 s on busy ones).

    python -m moloch_exp.agents.model_store            # convert conf/model/smollm2.yaml's model into the store (setup does)
    python -m moloch_exp.agents.model_store tiny       # any conf/model/<name>.yaml
    MOLOCH_MODEL_STORE=/path python run.py             # another store; MOLOCH_MODEL_STORE=off: none

The store has the layout of a cache directory (``<store>/models/<key>``; default ``~/.cache/moloch_exp``, beside
the llama-server build). ``ModelSource.materialize(cache_dir)`` takes ``<cache_dir>/models/<key>`` when it is
there, else the store's ``<key>`` when it is complete, else converts into ``<cache_dir>/models/<key>``: runs only
read the store, this command writes it. The key holds the GGUF file's digest (or the tiny model's settings), so
the copy in the store is the model a conversion would make.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["STORE_ENV", "store_dir", "stored", "main"]

STORE_ENV = "MOLOCH_MODEL_STORE"
MARKER = "moloch_model.json"  # written last by ModelSource's builds: a directory with it is complete
CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"


def store_dir() -> Path | None:
    """``$MOLOCH_MODEL_STORE`` (``off``, ``0`` or empty: no store), else ``$XDG_CACHE_HOME/moloch_exp``
    (``~/.cache/moloch_exp``)."""
    named = os.environ.get(STORE_ENV)
    if named is not None:
        return None if named.strip().lower() in ("", "0", "off", "none") else Path(named).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "moloch_exp"


def stored(key: str) -> Path | None:
    """The store's complete copy of the model directory ``key``, if it holds one."""
    root = store_dir()
    path = root / "models" / key if root is not None else None
    return path if path is not None and (path / MARKER).is_file() else None


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from moloch_exp.agents.model_source import ModelSource

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["smollm2"], help="names of conf/model/*.yaml (default: smollm2)")
    args = ap.parse_args(argv)
    root = store_dir()
    if root is None:
        print(f"{STORE_ENV} is off: no model store to fill", file=sys.stderr)
        return 2
    for name in args.models:
        conf = CONF_MODELS / f"{name}.yaml"
        if not conf.is_file():
            print(f"no model config {conf}", file=sys.stderr)
            return 2
        # resolved as `python run.py model=<name>` resolves it at the default seed (tiny_seed: ${seed})
        node = OmegaConf.merge({"seed": 0}, OmegaConf.load(conf))
        fields = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in ("_target_", "seed")}
        source = ModelSource(**fields)
        if source.kind == "hf":
            print(f"{name}: a Hugging Face model is used where it is, nothing to convert")
            continue
        print(f"{name}: {source.materialize(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""setup.cfg's requirements, one per line, for the shell scripts (stdlib only: it runs before any venv).

    python3 scripts/requirements.py no-deps     # [moloch_exp] no_deps_requires: for `pip install --no-deps`
    python3 scripts/requirements.py agent       # install_requires less what a GPU node's agent side never runs
    python3 scripts/requirements.py sdist-only  # [moloch_exp] sdist_only_requires: built into wheels for a wheelhouse

scripts/setup.sh installs the no-deps list after the project; scripts/gpu_check.sh puts all three in its wheelhouse.
"""
from __future__ import annotations

import configparser
import sys
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
# The tracker, the local launchers and the browser driver: not needed to generate and train on a GPU node.
NOT_ON_A_GPU_NODE = ("wandb", "hydra-joblib-launcher", "hydra-submitit-launcher", "playwright")


def requirement_lines(text: str) -> list[str]:
    """Requirements of one setup.cfg value, without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def main(which: str) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    if which == "no-deps":
        return requirement_lines(cfg["moloch_exp"]["no_deps_requires"])
    if which == "sdist-only":
        return requirement_lines(cfg["moloch_exp"]["sdist_only_requires"])
    if which == "agent":
        return [r for r in requirement_lines(cfg["options"]["install_requires"]) if not r.startswith(NOT_ON_A_GPU_NODE)]
    raise SystemExit(f"requirements.py: unknown list {which!r}; say no-deps, agent or sdist-only")


if __name__ == "__main__":
    print("\n".join(main(sys.argv[1] if len(sys.argv) > 1 else "")))

"""Compose conf/config.yaml in tests the way `python run.py` does."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = Path(os.environ.get("MOLOCH_SHARED_DATA", REPO.parent / "shared" / "data"))


def compose(overrides: list[str], output_dir: Path | None = None):
    """Compose conf/config.yaml like `python run.py` would, with the Hydra config set."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    import moloch_exp.resolvers  # noqa: F401

    if output_dir is not None:
        overrides = [*overrides, f"paths.output_dir={output_dir}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

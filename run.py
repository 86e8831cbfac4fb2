"""Run one experiment cell, or sweep with -m. See README.md.

    python run.py task=elections method=rft model=llama
    python run.py -m task=sales,elections,social_media method=rft,tfb model=tiny
"""
import hydra
from omegaconf import DictConfig

from moloch_exp import pipeline


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    pipeline.run(cfg)


if __name__ == "__main__":
    main()

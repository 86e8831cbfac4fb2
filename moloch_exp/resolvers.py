"""OmegaConf resolvers used by conf/ (registered on import of moloch_exp.pipeline).

``${moloch_run_stamp:}`` names the run directory. Under ``accelerate launch`` every rank must
land in the same directory, so ranks use the start time of their common launcher process instead
of their own clocks.
"""
from __future__ import annotations

import os
import time

from omegaconf import OmegaConf


def run_stamp() -> str:
    started = time.time()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import psutil

        started = psutil.Process(os.getppid()).create_time()
    return time.strftime("%Y-%m-%d/%H-%M-%S", time.localtime(started))


def register() -> None:
    if not OmegaConf.has_resolver("moloch_run_stamp"):
        OmegaConf.register_new_resolver("moloch_run_stamp", run_stamp, use_cache=True)


register()

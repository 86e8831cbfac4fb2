"""moloch_exp: competitive-audience misalignment experiments (see README.md)."""
import logging
import os

_factory = logging.getLogRecordFactory()


def _record_with_rank(*args, **kwargs):
    # Under `accelerate launch` both ranks log into one run.log; each line says whose it is.
    record = _factory(*args, **kwargs)
    record.rank = os.environ.get("RANK", "0")
    return record


logging.setLogRecordFactory(_record_with_rank)

# torch's OpenMP threads (generation, training) sleep at their barriers instead of spinning, unless the environment
# says otherwise: it is read when torch loads, so it is set here, before any module imports torch. On 2 cores shared
# with other work a spinning thread holds the core its partner needs: a SmolLM2 decoding step took 0.8-1.2 s with two
# spinning threads against 0.08-0.10 s with two sleeping ones (load 3-4; README, "The local server").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

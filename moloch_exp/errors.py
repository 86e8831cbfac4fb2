"""One error hierarchy for everything a user can cause or fix (SPEC §5, §9).

A ``UserError`` ends the run with one line naming the cause, exit code non-zero and no traceback
(``pipeline.run`` catches it; ``run.py`` unwraps Hydra's ``InstantiationException`` around it).
Anything else is a bug: it also ends in one line (the stage it struck and the cause), and its
traceback goes to the run's log file (``pipeline.run``).

    UserError
    ├── ConfigError        an option or override that cannot work (unknown source, impossible comparison)
    ├── DataError          a data file is missing, malformed, or a record's field has the wrong type
    ├── ModelError         weights or a tokenizer are not available offline
    ├── ServiceError       an audience/judge endpoint: missing key, unreachable, server died or did not start
    ├── BudgetError        the run's LLM spend would pass budget.max_usd
    └── StageError         a stage cannot go on: failed calls past the tolerance, no training examples
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message is the one line they see."""


class ConfigError(UserError, ValueError):
    """An option or a combination of options that cannot work."""


class DataError(UserError, ValueError):
    """A data file is missing or malformed, or a record lacks a field; the message names file, record and field."""


class ModelError(UserError, RuntimeError):
    """Model weights or a tokenizer cannot be loaded offline."""


class ServiceError(UserError, RuntimeError):
    """An audience or judge service is misconfigured, unreachable, or its managed server died."""


class BudgetError(UserError, RuntimeError):
    """The run's LLM spend would pass the configured cap."""


class StageError(UserError, RuntimeError):
    """A stage cannot go on; finished stages stay cached and a re-run resumes."""

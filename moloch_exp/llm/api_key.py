"""The API key of an endpoint: named by an environment variable, read when a connection opens.

The value is never stored on a client, logged, pickled or shown in a ``repr``; :meth:`ApiKey.scrub`
removes it from any text (a server's error body may quote it back) before that text reaches a result
or a log. ``LLMClient(api_key_env=None)`` (a local server) sends the placeholder ``not-needed``.
"""

from __future__ import annotations

import os

from moloch_exp.errors import ServiceError

NO_KEY = "not-needed"  # local servers ignore the key; an Authorization header is sent all the same


class MissingAPIKey(ServiceError):
    """``api_key_env`` names an environment variable that is unset or empty."""


class ApiKey:
    """``env``: the variable's name (``None``: no key). ``where``: the endpoint and model, for the error line."""

    def __init__(self, env: str | None, where: str) -> None:
        self.env = env or None
        self.where = where

    def __repr__(self) -> str:
        return f"ApiKey(env={self.env!r})"

    def read(self) -> str:
        """The key's value now; raises :class:`MissingAPIKey` when the variable is unset or blank."""
        if self.env is None:
            return NO_KEY
        value = os.environ.get(self.env, "")
        if not value.strip():
            raise MissingAPIKey(
                f"LLM endpoint {self.where} needs an API key in the environment variable {self.env}, which is "
                f"unset or empty. Export it (e.g. `export {self.env}=...`) or set api_key_env to null for a local server."
            )
        return value

    def scrub(self, text: str) -> str:
        """``text`` with the key's value replaced by ``***``."""
        if self.env:
            key = os.environ.get(self.env, "")
            if len(key) >= 4:
                text = text.replace(key, "***")
        return text

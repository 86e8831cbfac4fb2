"""API keys: a missing key stops construction with a clear message; a planted key never
shows up in repr, pickles, ledgers, results or logs (it is still sent to the server)."""

from __future__ import annotations

import logging
import pickle

import pytest
from llm_test_helpers import small_request

from moloch_exp.llm import LLMClient, MissingAPIKey

SECRET = "sk-test-PLANTED-7f3a9c1e55d04b2b"


def test_missing_key_raises_at_construction(monkeypatch):
    monkeypatch.delenv("MOLOCH_TEST_KEY", raising=False)
    with pytest.raises(MissingAPIKey, match="MOLOCH_TEST_KEY"):
        LLMClient("https://api.example.invalid/v1", "gpt-4o-mini", api_key_env="MOLOCH_TEST_KEY")
    monkeypatch.setenv("MOLOCH_TEST_KEY", "  ")
    with pytest.raises(MissingAPIKey, match="unset or empty"):
        LLMClient("https://api.example.invalid/v1", "gpt-4o-mini", api_key_env="MOLOCH_TEST_KEY")


def test_planted_key_never_leaks(monkeypatch, proxy, make_client, caplog, capsys):
    monkeypatch.setenv("MOLOCH_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    client = make_client(api_key_env="MOLOCH_TEST_KEY", max_retries=0)
    proxy.push("echo_auth")  # a 401 whose body quotes the Authorization header back
    results = client.chat_many([small_request(1), small_request(2)], desc="keys")
    # Two requests are in flight at once: the fault goes to whichever reaches the proxy first.
    failed, answered = [r for r in results if not r.ok], [r for r in results if r.ok]
    assert len(failed) == 1 and len(answered) == 1, results
    bad, good = failed[0], answered[0]
    assert "HTTP 401" in bad.error and "***" in bad.error
    assert proxy.auth_seen and all(a == f"Bearer {SECRET}" for a in proxy.auth_seen)  # it was sent

    out = capsys.readouterr()
    blobs = [
        repr(client),
        str(client),
        str(vars(client)),
        repr(pickle.loads(pickle.dumps(client))),
        pickle.dumps(client).decode("latin-1"),
        str(client.ledger.to_dict()),
        repr(bad),
        repr(good),
        caplog.text,
        out.out,
        out.err,
    ]
    for blob in blobs:
        assert SECRET not in blob
    assert "MOLOCH_TEST_KEY" in repr(client)  # the variable's name is fine to show

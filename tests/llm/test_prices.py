"""Prices (moloch_exp/llm/prices.py) and the ledger's dollars: genai-prices' rates for a known model,
cached input and the Batch API, llm.prices entries, local servers free, an unknown model unpriced
(None, never $0), and a budget with an unpriced model refused through `python run.py`.

    PYTHONPATH=$PWD python -m pytest tests/llm/test_prices.py -q
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from moloch_exp.connections import LLMService
from moloch_exp.errors import ConfigError
from moloch_exp.llm.ledger import Ledger, usd_text
from moloch_exp.llm.prices import LOCAL, PriceBook, price_from_entry
from moloch_exp.report.tables import ledger_rows

REPO = Path(__file__).resolve().parents[2]


def library_usd(model: str, prompt: int, completion: int, cached: int = 0, batch: bool = False) -> float:
    """The price genai-prices itself computes for one call (its own arithmetic, not ours)."""
    usage = Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion)
    ctx = {"processing": "batch"} if batch else None
    return float(calc_price(usage, model, provider_id="openai", price_context=ctx).total_price)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o"])
def test_a_known_model_costs_what_genai_prices_says(model):
    led = Ledger()
    usd = led.record_call(model, 1234, 567)
    assert usd == pytest.approx(library_usd(model, 1234, 567), rel=1e-9) and usd > 0
    with_cache = led.record_call(model, 4000, 100, cached_prompt_tokens=3072)
    assert with_cache == pytest.approx(library_usd(model, 4000, 100, cached=3072), rel=1e-9)
    assert with_cache < led.cost(model, 4000, 100)  # cached input is cheaper than fresh input
    d = led.to_dict()
    assert d["per_model"][model]["usd"] == pytest.approx(usd + with_cache)
    assert d["cached_prompt_tokens"] == 3072 and d["per_model"][model]["price"].startswith("genai-prices")
    assert d["usd"] == pytest.approx(usd + with_cache) and d["unpriced"] == []


def test_the_batch_api_costs_half():
    led = Ledger()
    standard = led.cost("gpt-4o-mini", 10_000, 2_000)
    batch = led.record_call("gpt-4o-mini", 10_000, 2_000, batch=True)
    assert batch == pytest.approx(standard / 2, rel=1e-9)
    assert batch == pytest.approx(library_usd("gpt-4o-mini", 10_000, 2_000, batch=True), rel=1e-9)
    assert led.to_dict()["batch_calls"] == 1


def test_an_unknown_model_is_unpriced_never_zero_dollars():
    led = Ledger(prices={"gpt-x": {"input_per_1m": 2.0, "output_per_1m": 8.0}})
    led.record_call("gpt-x", 1_000_000, 500_000)
    led.record_call("no-such-model-anywhere", 100, 10)
    led.record_cache_hit("another-unknown")  # no call at all: still no price, still not $0
    d = led.to_dict()
    assert d["per_model"]["gpt-x"]["usd"] == pytest.approx(2.0 + 4.0)
    assert d["per_model"]["no-such-model-anywhere"]["usd"] is None
    assert d["per_model"]["another-unknown"]["usd"] is None and d["per_model"]["another-unknown"]["price"] is None
    assert d["usd"] is None and d["unpriced"] == ["another-unknown", "no-such-model-anywhere"]
    assert usd_text(d["usd"], d["unpriced"]) == "unpriced (another-unknown, no-such-model-anywhere)"
    rows = {r[0]: r for r in ledger_rows(d, None)}  # summary.md and the printed table
    assert rows["LLM spend"][1].startswith("unpriced") and "$0" not in rows["LLM spend"][1]
    assert rows["LLM spend no-such-model-anywhere"][1] == "unpriced"
    assert rows["LLM spend gpt-x"][1] == "$6.0000"


def test_config_entries_override_and_name_their_mistakes():
    book = PriceBook({"gpt-4o-mini": {"input_per_1m": 1.0, "output_per_1m": 2.0, "cached_input_per_1m": 0.5,
                                      "batch_discount": 0.25},
                      "old-style": {"prompt_per_1m": 3.0, "completion_per_1m": 4.0}})
    mine = book.lookup("gpt-4o-mini")
    assert mine.source == "llm.prices"
    assert mine.usd(1_000_000, 1_000_000, cached_prompt_tokens=500_000) == pytest.approx(0.5 + 0.25 + 2.0)
    assert mine.usd(1_000_000, 0, batch=True) == pytest.approx(0.75)  # 25% off
    assert book.lookup("old-style").usd(1_000_000, 1_000_000) == pytest.approx(7.0)
    assert book.lookup("old-style").usd(1_000_000, 0, batch=True) == pytest.approx(1.5)  # default: half
    with pytest.raises(ConfigError, match=r"llm.prices.m: unknown key\(s\) \['input'\]"):
        price_from_entry("m", {"input": 1.0, "output_per_1m": 1.0})
    with pytest.raises(ConfigError, match="llm.prices.m: needs output_per_1m"):
        PriceBook({"m": {"input_per_1m": 1.0}})


def test_services_are_priced_by_url_and_local_servers_are_free():
    book = PriceBook()
    local = LLMService(model="smollm2", managed="llamacpp", structured_output="llamacpp")
    assert local.identity().startswith("llama-server:") and local.identity().endswith(".gguf")
    assert book.for_service(local) is LOCAL and LOCAL.usd(10**6, 10**6) == 0.0
    hosted = LLMService(model="gpt-4o", base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY")
    assert book.for_service(hosted).source.endswith("openai/gpt-4o")
    loopback = LLMService(model="gpt-4o-mini", base_url="http://127.0.0.1:8000/v1")  # a fake of the API, by name
    assert book.for_service(loopback).usd(1000, 0) == pytest.approx(library_usd("gpt-4o-mini", 1000, 0))
    assert book.for_service(LLMService(model="my-own-model", base_url="http://127.0.0.1:8000/v1")) is None
    led = Ledger(prices=book)
    led.bind("SmolLM2-alias", book.for_service(local))  # the name a managed server answers to
    led.record_call("SmolLM2-alias", 500, 50)
    alias = led.to_dict()["per_model"]["SmolLM2-alias"]
    assert alias["usd"] == 0.0 and alias["price"] == LOCAL.source  # free by nature, not unpriced


def test_prices_need_no_network():
    """genai-prices ships its data: pricing works with every socket refused."""
    code = ("import socket\n"
            "class Refused(socket.socket):\n"
            "    def connect(self, *a): raise OSError('network used')\n"
            "    def connect_ex(self, *a): raise OSError('network used')\n"
            "socket.socket = Refused\n"
            "socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError('network used'))\n"
            "from moloch_exp.llm.prices import PriceBook\n"
            "p = PriceBook().lookup('gpt-4o-mini')\n"
            "print(p.standard.input_per_1m > 0, p.batch.output_per_1m < p.standard.output_per_1m)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]


@pytest.fixture
def endpoint():
    """An HTTP server on loopback that answers every request 404: reachable, as pre-flight asks, and nothing more."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.e2e
def test_budget_with_an_unpriced_model_stops_run_py_with_one_line(tmp_path, endpoint):
    """After the setup checks and before any work: exit code 1, one line naming the model, no traceback."""
    out = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "model=tiny", "audience=openai_compatible",
         "audience.service.model=my-unpriced-model", f"audience.service.base_url={endpoint}",
         "budget.max_usd=5", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=_env(tmp_path))
    assert out.returncode != 0
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("error:")]
    assert errors == ["error: ConfigError: budget.max_usd=5 is set but model my-unpriced-model has no known price "
                      "(not in genai-prices 0.2.5 nor in llm.prices): add it under llm.prices (e.g. "
                      "'+llm.prices.my-unpriced-model={input_per_1m: 0.15, output_per_1m: 0.6}') "
                      "or set budget.max_usd=null"]
    assert "Traceback" not in out.stderr and not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "cache" / "models").exists()  # stopped before the agent was built


def _env(tmp_path: Path) -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "MOLOCH_CACHE_DIR": str(tmp_path / "cache")}

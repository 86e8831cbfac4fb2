"""What a model's tokens cost: genai-prices' bundled data, or ``llm.prices`` where the config names the model.

    python run.py audience=gpt4o_mini judge=gpt4o                       # priced by genai-prices (pinned)
    python run.py '+llm.prices.my-model={input_per_1m: 0.2, output_per_1m: 0.8}'   # a price of your own

Prices come from the ``genai-prices`` package's snapshot (offline data shipped with the pinned version;
its ``UpdatePrices`` downloader is never started, so pricing needs no network). A model is looked up
by the API's URL first (``https://api.openai.com/v1`` → openai), then by its name alone; a model
served by a managed local server (``llama-server:<build>:<sampling>:<file>.gguf``, a managed vLLM) costs nothing but local
compute and is priced as free. A model found nowhere is **unpriced** (``None``), never $0.

Rates are per million tokens: input, cached input (a prompt prefix the API served from its prompt
cache) and output, and the same three for the Batch API (genai-prices' batch rates: OpenAI charges
half; a ``llm.prices`` entry gets ``batch_discount``, default 0.5). Rates are read at small request
sizes, so context-length tiers above 128k tokens are not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import genai_prices
from genai_prices import Usage, calc_price

from moloch_exp.errors import ConfigError

GENAI_PRICES_VERSION = genai_prices.__version__
BATCH_DISCOUNT = 0.5  # the OpenAI Batch API's price: half of input and output
_SAMPLE_TOKENS = 1000  # rates are read at this request size (below every context-length tier)
# llm.prices keys; prompt_per_1m / completion_per_1m are the older names of input / output
_OVERRIDE_KEYS = {"input_per_1m": "input", "prompt_per_1m": "input", "output_per_1m": "output",
                  "completion_per_1m": "output", "cached_input_per_1m": "cached_input",
                  "batch_discount": "batch_discount"}


@dataclass(frozen=True)
class Rates:
    """USD per million tokens of one way of calling a model (standard or batch)."""

    input_per_1m: float
    cached_input_per_1m: float
    output_per_1m: float

    def usd(self, prompt_tokens: float, completion_tokens: float, cached_prompt_tokens: float = 0) -> float:
        """``prompt_tokens`` includes the cached ones (as the API's ``usage`` reports them)."""
        cached = min(max(0.0, float(cached_prompt_tokens)), float(prompt_tokens))
        return ((float(prompt_tokens) - cached) * self.input_per_1m + cached * self.cached_input_per_1m
                + float(completion_tokens) * self.output_per_1m) / 1e6

    def scaled(self, factor: float) -> "Rates":
        return Rates(self.input_per_1m * factor, self.cached_input_per_1m * factor, self.output_per_1m * factor)


@dataclass(frozen=True)
class Price:
    """A model's standard and Batch API rates, and where they come from (``source``)."""

    standard: Rates
    batch: Rates
    source: str  # "genai-prices 0.2.5: openai/gpt-4o-mini" | "llm.prices" | "local server (free)"

    def usd(self, prompt_tokens: float, completion_tokens: float, cached_prompt_tokens: float = 0,
            batch: bool = False) -> float:
        return (self.batch if batch else self.standard).usd(prompt_tokens, completion_tokens, cached_prompt_tokens)

    def to_json(self) -> dict:
        return {"source": self.source, "standard": self.standard.__dict__, "batch": self.batch.__dict__}


_FREE_RATES = Rates(0.0, 0.0, 0.0)
LOCAL = Price(_FREE_RATES, _FREE_RATES, "local server (free)")


def price_from_entry(model: str, entry: Mapping) -> Price:
    """A ``llm.prices.<model>`` entry: ``input_per_1m``, ``output_per_1m`` [, ``cached_input_per_1m``
    (default: the input rate), ``batch_discount`` (default 0.5)]."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"llm.prices.{model}: expected {{input_per_1m: ..., output_per_1m: ...}}, got {entry!r}")
    unknown = sorted(set(entry) - set(_OVERRIDE_KEYS))
    if unknown:
        raise ConfigError(f"llm.prices.{model}: unknown key(s) {unknown} (use {', '.join(sorted(_OVERRIDE_KEYS))})")
    got = {_OVERRIDE_KEYS[k]: v for k, v in entry.items()}
    missing = [k for k in ("input", "output") if got.get(k) is None]
    if missing:
        raise ConfigError(f"llm.prices.{model}: needs {' and '.join(k + '_per_1m' for k in missing)}")
    try:
        values = {k: float(v) for k, v in got.items() if v is not None}
    except (TypeError, ValueError):
        raise ConfigError(f"llm.prices.{model}: rates must be numbers, got {dict(entry)}") from None
    if any(v < 0 for v in values.values()) or values.get("batch_discount", BATCH_DISCOUNT) > 1:
        raise ConfigError(f"llm.prices.{model}: rates must be >= 0 and batch_discount in [0, 1], got {dict(entry)}")
    standard = Rates(values["input"], values.get("cached_input", values["input"]), values["output"])
    return Price(standard, standard.scaled(1.0 - values.get("batch_discount", BATCH_DISCOUNT)), "llm.prices")


def _rates(model_ref: str, where: dict, context: dict | None) -> tuple[Rates, str]:
    def per_1m(usage: Usage) -> float:
        return float(calc_price(usage, model_ref, price_context=context, **where).total_price) * 1e6 / _SAMPLE_TOKENS

    found = calc_price(Usage(input_tokens=_SAMPLE_TOKENS), model_ref, price_context=context, **where)
    rates = Rates(float(found.total_price) * 1e6 / _SAMPLE_TOKENS,
                  per_1m(Usage(input_tokens=_SAMPLE_TOKENS, cache_read_tokens=_SAMPLE_TOKENS)),
                  per_1m(Usage(output_tokens=_SAMPLE_TOKENS)))
    return rates, f"{found.provider.id}/{found.model.id}"


def price_from_genai_prices(model: str, base_url: str | None = None) -> Price | None:
    """genai-prices' rates for ``model`` (by the API's URL, then by name); None when it has none."""
    tries = ([{"provider_api_url": base_url}] if base_url else []) + [{}]
    if "/" in model:  # OpenRouter-style "openai/gpt-4o-mini"
        provider, name = model.split("/", 1)
        tries.append({"provider_id": provider, "_model": name})
    for where in tries:
        ref = where.pop("_model", model)
        try:
            standard, found = _rates(ref, where, None)
            batch, _ = _rates(ref, where, {"processing": "batch"})
        except LookupError:
            continue
        return Price(standard, batch, f"genai-prices {GENAI_PRICES_VERSION}: {found}")
    return None


@dataclass
class PriceBook:
    """Resolves models to prices: ``llm.prices`` entries first, then local servers (free), then genai-prices."""

    overrides: dict = field(default_factory=dict)  # llm.prices: {model: {input_per_1m, output_per_1m, ...}}
    _found: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.overrides = {str(k): v for k, v in dict(self.overrides or {}).items()}
        for model, entry in self.overrides.items():
            price_from_entry(model, entry)  # a malformed entry fails at start, naming the model

    def update(self, overrides: Mapping) -> None:
        self.__init__({**self.overrides, **dict(overrides)})  # type: ignore[misc]

    def lookup(self, model: str, base_url: str | None = None, local: bool = False) -> Price | None:
        """``local``: served by a managed server on this machine (free unless ``llm.prices`` says otherwise)."""
        if model in self.overrides:
            return price_from_entry(model, self.overrides[model])
        if local:
            return LOCAL
        key = (model, base_url)
        if key not in self._found:
            self._found[key] = price_from_genai_prices(model, base_url)
        return self._found[key]

    def for_service(self, service) -> Price | None:
        """The price of an ``LLMService`` (moloch_exp.connections) by its identity."""
        return self.lookup(service.identity(), service.base_url, local=service.managed is not None)


def unpriced_message(model: str, role: str | None = None) -> str:
    """How to price ``model`` when neither genai-prices nor llm.prices knows it."""
    who = f" ({role})" if role else ""
    return (f"model {model}{who} has no known price (not in genai-prices {GENAI_PRICES_VERSION} nor in llm.prices): "
            f"add it under llm.prices (e.g. '+llm.prices.{model}={{input_per_1m: 0.15, output_per_1m: 0.6}}') "
            "or set budget.max_usd=null")

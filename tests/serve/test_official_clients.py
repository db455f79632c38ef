"""The official ollama and openai Python packages, unchanged, against the gateway and the real engine."""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest
from tests.conftest import EngineGateway, Keys

pytestmark = pytest.mark.engine
MODEL = "smollm2:135m"


def _ollama(gw: EngineGateway, key: str | None) -> ollama.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return ollama.Client(host=gw.url, headers=headers, verify=gw.ssl())


def _openai(gw: EngineGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, http_client=httpx.Client(verify=gw.ssl()))


def test_ollama_client_chats(engine_gateway: EngineGateway, keys: Keys) -> None:
    client = _ollama(engine_gateway, keys.alice)
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "Say hello."}], options={"num_predict": 12})
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.eval_count and reply.eval_count <= 12 and reply.prompt_eval_count
    assert reply.total_duration and reply.total_duration > 0


def test_ollama_client_streams(engine_gateway: EngineGateway, keys: Keys) -> None:
    client = _ollama(engine_gateway, keys.alice)
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Count to five."}], stream=True,
                             options={"num_predict": 10, "temperature": 0}))  # fmt: skip
    assert len(parts) >= 3 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts).strip()
    assert parts[-1].eval_count == len(parts) - 1


def test_ollama_client_generate_embed_list_show(engine_gateway: EngineGateway, keys: Keys) -> None:
    client = _ollama(engine_gateway, keys.alice)
    gen = client.generate(model=MODEL, prompt="The capital of France is", options={"num_predict": 5, "seed": 1})
    assert gen.response and gen.done
    emb = client.embed(model=MODEL, input=["hello", "world"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 576  # one pooled vector per input
    listed = client.list().models
    assert [m.model for m in listed] == [MODEL]
    # what Ollama itself reports for this file: the GGUF's architecture, real size and quantization
    assert listed[0].size == 98362432 and listed[0].details.quantization_level == "Q4_1"
    shown = client.show(MODEL)
    assert shown.details.family == "llama" and shown.details.quantization_level == "Q4_1"
    assert shown.details.parameter_size == "135M" and shown.modelinfo["general.parameter_count"] == 134515008


def test_ollama_client_without_a_key_is_refused(engine_gateway: EngineGateway) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        _ollama(engine_gateway, None).chat(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401


def test_openai_client_chats_and_streams(engine_gateway: EngineGateway, keys: Keys) -> None:
    client = _openai(engine_gateway, keys.bob)
    done = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert done.choices[0].message.content and done.usage and done.usage.completion_tokens <= 8
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}],
                                            max_tokens=8, stream=True)  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip()


def test_openai_client_completions_embeddings_models(engine_gateway: EngineGateway, keys: Keys) -> None:
    client = _openai(engine_gateway, keys.bob)
    comp = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5)
    assert comp.choices[0].text
    emb = client.embeddings.create(model=MODEL, input="hello")
    assert len(emb.data[0].embedding) == 576 and isinstance(emb.data[0].embedding[0], float)
    assert [m.id for m in client.models.list()] == [MODEL]


def test_openai_client_with_a_bad_key_is_refused(engine_gateway: EngineGateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        _openai(engine_gateway, "hlm_not-a-real-key").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )


def test_a_model_outside_the_keys_allowlist_is_forbidden_and_unknown_models_are_404(
    engine_gateway: EngineGateway, keys: Keys
) -> None:
    with engine_gateway.client(keys.alice) as c:
        r = c.post("/v1/chat/completions", json={"model": "qwen2.5:14b", "messages": []})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    with engine_gateway.client(keys.bob) as c:
        r = c.post("/api/chat", json={"model": "qwen2.5:14b", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404 and "not found" in r.json()["error"]

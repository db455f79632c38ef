"""Pure converters between the Ollama and OpenAI APIs."""

from __future__ import annotations

from homellm.protocol import translate
from homellm.protocol.ollama import ChatRequest, GenerateRequest


def test_chat_options_map_to_openai_fields() -> None:
    req = ChatRequest.model_validate({
        "model": "m", "messages": [{"role": "user", "content": "hi", "images": ["AAAA"]}], "stream": False,
        "format": "json", "options": {"temperature": 0.1, "num_predict": 9, "stop": "END", "seed": 3, "top_p": 0.5},
    })  # fmt: skip
    body = translate.chat_to_openai(req)
    assert body["max_tokens"] == 9 and body["stop"] == ["END"] and body["seed"] == 3 and body["top_p"] == 0.5
    assert body["response_format"] == {"type": "json_object"} and body["stream"] is False
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "hi"} and parts[1]["image_url"]["url"].startswith("data:image/")


def test_ollama_streams_by_default_and_asks_for_usage() -> None:
    body = translate.chat_to_openai(ChatRequest.model_validate({"model": "m", "messages": []}))
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_generate_uses_the_chat_template_unless_raw() -> None:
    path, body = translate.generate_to_openai(GenerateRequest(model="m", prompt="p", system="s", stream=False))
    assert path == "/v1/chat/completions" and body["messages"][0] == {"role": "system", "content": "s"}
    path, body = translate.generate_to_openai(GenerateRequest(model="m", prompt="p", raw=True, stream=False))
    assert path == "/v1/completions" and body["prompt"] == "p"


def test_response_translation_and_done_reason() -> None:
    timing = translate.Timing()
    resp = {"choices": [{"message": {"content": "hello"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}}  # fmt: skip
    out = translate.chat_response_to_ollama("chat", "m", resp, timing)
    assert out["message"] == {"role": "assistant", "content": "hello"} and out["done"] is True
    assert out["done_reason"] == "length" and out["prompt_eval_count"] == 5 and out["eval_count"] == 2
    assert all(isinstance(out[k], int) for k in ("total_duration", "prompt_eval_duration", "eval_duration"))
    gen = translate.chat_response_to_ollama(
        "generate", "m", {"choices": [{"text": "t", "finish_reason": "stop"}]}, timing
    )
    assert gen["response"] == "t" and gen["done_reason"] == "stop"


def test_deltas_and_tags() -> None:
    assert translate.openai_delta({"choices": [{"delta": {"content": "a"}, "finish_reason": None}]}) == ("a", None)
    assert translate.openai_delta({"choices": [{"text": "b", "finish_reason": "stop"}]}) == ("b", "stop")
    assert translate.openai_delta({"choices": []}) == ("", None)
    tags = translate.models_to_tags([{"id": "qwen2.5:7b", "created": 0}])
    assert tags["models"][0]["name"] == "qwen2.5:7b" and tags["models"][0]["details"]["family"] == "qwen2.5"

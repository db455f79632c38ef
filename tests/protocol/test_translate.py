"""Pure converters between the Ollama and OpenAI APIs."""

from __future__ import annotations

from homellm.protocol import translate
from homellm.protocol.ollama import ChatRequest, GenerateRequest


def test_chat_options_map_to_openai_fields() -> None:
    req = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi", "images": ["AAAA"]}],
            "stream": False,
            "format": "json",
            "options": {"temperature": 0.1, "num_predict": 9, "stop": "END", "seed": 3, "top_p": 0.5},
        }
    )
    body = translate.chat_to_openai(req)
    assert body["max_tokens"] == 9 and body["stop"] == ["END"] and body["seed"] == 3 and body["top_p"] == 0.5
    assert body["response_format"] == {"type": "json_object"}
    assert body["stream"] is True  # the gateway always streams upstream, and assembles a non-streamed answer
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


def test_a_stream_translates_to_ollama_objects_with_counts_and_tool_calls() -> None:
    out = translate.OllamaStream("chat", "m")
    assert out.feed({"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}) == []
    [first] = out.feed({"choices": [{"delta": {"content": "hel"}, "finish_reason": None}]})
    assert first["message"] == {"role": "assistant", "content": "hel"} and first["done"] is False
    out.feed({"choices": [{"delta": {"content": "lo"}, "finish_reason": None}]})
    call = {"index": 0, "id": "c1", "function": {"name": "weather", "arguments": '{"city":'}}
    out.feed({"choices": [{"delta": {"tool_calls": [call]}, "finish_reason": None}]})
    out.feed(
        {
            "choices": [
                {
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Kyoto"}'}}]},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9},
        }
    )
    tools = out.tool_chunk()
    assert tools is not None
    assert tools["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "weather", "arguments": {"city": "Kyoto"}}}
    ]
    final = out.final()
    assert final["done"] and final["done_reason"] == "stop" and final["prompt_eval_count"] == 5
    assert final["eval_count"] == 9 and all(
        isinstance(final[k], int) and final[k] >= 0 for k in ("total_duration", "prompt_eval_duration", "eval_duration")
    )
    whole = out.whole()
    assert whole["message"]["content"] == "hello" and whole["message"]["tool_calls"][0]["function"]["name"] == "weather"


def test_backend_timings_are_used_when_the_backend_gives_them() -> None:
    out = translate.OllamaStream("generate", "m")
    out.feed(
        {
            "choices": [{"text": "t", "finish_reason": "length"}],
            "timings": {"prompt_n": 11, "prompt_ms": 12.5, "predicted_n": 3, "predicted_ms": 30.0},
        }
    )
    final = out.final()
    assert final["done_reason"] == "length" and final["response"] == ""
    assert final["prompt_eval_duration"] == 12_500_000 and final["eval_duration"] == 30_000_000
    assert final["prompt_eval_count"] == 11 and final["eval_count"] == 3


def test_openai_stream_aggregates_into_one_answer() -> None:
    whole = translate.OpenAIWhole(chat=True)
    whole.feed(
        {"id": "x1", "model": "m", "created": 5, "choices": [{"delta": {"content": "a"}, "finish_reason": None}]}
    )
    whole.feed({"choices": [{"delta": {"content": "b"}, "finish_reason": "length"}]})
    result = whole.result(prompt_tokens=4)
    assert result["id"] == "x1" and result["object"] == "chat.completion" and result["created"] == 5
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "ab"}
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_ollama_tool_messages_become_openai_tool_calls_and_results() -> None:
    req = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Kyoto"}}}],
                },
                {"role": "tool", "content": "sunny", "tool_name": "weather"},
            ],
        }
    )
    msgs = translate.chat_to_openai(req)["messages"]
    call = msgs[1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"] == {"name": "weather", "arguments": '{"city": "Kyoto"}'}
    assert msgs[2] == {"role": "tool", "content": "sunny", "tool_call_id": call["id"]}


def test_errors_and_tags() -> None:
    assert translate.error_message({"error": {"message": "boom", "type": "server_error"}}) == "boom"
    assert translate.error_message({"error": "plain"}) == "plain"
    assert translate.error_message({"choices": []}) is None
    tag = translate.tag_entry("qwen2.5:7b", 5, {"quantization_level": "Q4_K_M"})
    assert tag["name"] == "qwen2.5:7b" and tag["details"]["family"] == "qwen2.5" and tag["size"] == 5
    assert tag["details"]["quantization_level"] == "Q4_K_M"

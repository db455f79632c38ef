"""Pure converters from the Ollama API to the OpenAI API and back.

Used when the front a client speaks is not the backend's (an Ollama client in
front of llama-server, vLLM, LM Studio or the embedded engine). No I/O here.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from homellm.protocol.ollama import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, Options

# Ollama's done_reason and OpenAI's finish_reason
FINISH_TO_DONE = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop"}


def _sampling(options: Options | None) -> dict[str, Any]:
    """Ollama options as OpenAI request fields (num_predict -> max_tokens, ...)."""
    if options is None:
        return {}
    out: dict[str, Any] = {}
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        ("top_k", "top_k"),  # llama-server, vLLM and llama-cpp-python accept it
        ("repeat_penalty", "repeat_penalty"),
    ):
        value = getattr(options, src)
        if value is not None:
            out[dst] = value
    if options.num_predict is not None and options.num_predict >= 0:
        out["max_tokens"] = options.num_predict
    if options.stop:
        out["stop"] = [options.stop] if isinstance(options.stop, str) else options.stop
    return out


def _response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any]:
    if fmt == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(fmt, dict):
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "schema", "schema": fmt}}}
    return {}


def _tool_calls_to_openai(calls: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Ollama tool calls (arguments as an object) as OpenAI ones (arguments as a JSON string, with ids)."""
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        args = fn.get("arguments", {})
        out.append(
            {
                "id": call.get("id") or f"{prefix}_{i}",
                "type": "function",
                "function": {
                    "name": fn.get("name", ""),
                    "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                },
            }
        )
    return out


def chat_to_openai(req: ChatRequest) -> dict[str, Any]:
    """An Ollama chat request as an OpenAI one. The gateway always streams upstream (and aggregates
    for a non-streamed client), so timings are real and a client leaving stops the generation."""
    messages = []
    pending: dict[str, list[str]] = {}  # tool name -> ids of the calls not answered yet
    for n, m in enumerate(req.messages):
        msg: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content or ""}]
            parts += [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}} for img in m.images]
            msg["content"] = parts
        if m.tool_calls:
            msg["tool_calls"] = _tool_calls_to_openai(m.tool_calls, f"call_{n}")
            for call in msg["tool_calls"]:
                pending.setdefault(call["function"]["name"], []).append(call["id"])
        if m.role == "tool":
            extra = m.model_extra or {}
            name = str(extra.get("tool_name") or extra.get("name") or "")
            ids = pending.get(name) or next((v for v in pending.values() if v), [])
            msg["tool_call_id"] = str(extra.get("tool_call_id") or (ids.pop(0) if ids else f"call_{n}"))
        messages.append(msg)
    body: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body |= _sampling(req.options) | _response_format(req.format)
    if req.tools:
        body["tools"] = req.tools
    return body


def generate_to_openai(req: GenerateRequest) -> tuple[str, dict[str, Any]]:
    """(path, body): templated prompts go to chat completions, raw ones to completions (always streamed)."""
    base = {"model": req.model, "stream": True, "stream_options": {"include_usage": True}}
    base |= _sampling(req.options) | _response_format(req.format)
    if req.raw:
        return "/v1/completions", base | {"prompt": req.prompt} | ({"suffix": req.suffix} if req.suffix else {})
    messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
        {"role": "user", "content": req.prompt}
    ]
    return "/v1/chat/completions", base | {"messages": messages}


def embed_to_openai(req: EmbedRequest | EmbeddingsRequest) -> dict[str, Any]:
    text = req.prompt if isinstance(req, EmbeddingsRequest) else req.input
    return {"model": req.model, "input": text}


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Timing:
    """The nanosecond timing fields Ollama reports.

    The backend's own figures are used where it gives them (llama-server's ``timings``); otherwise
    the gateway measures around the backend call: prompt evaluation ends at the first token.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter_ns()
        self.first: int | None = None
        self.backend: dict[str, Any] | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.perf_counter_ns()

    def fields(self, prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, Any]:
        end = time.perf_counter_ns()
        first = self.first or end
        out: dict[str, Any] = {
            "total_duration": end - self.start,
            "load_duration": 0,
            "prompt_eval_duration": first - self.start,
            "eval_duration": end - first,
        }
        t = self.backend or {}
        if isinstance(t.get("prompt_ms"), int | float) and isinstance(t.get("predicted_ms"), int | float):
            out["prompt_eval_duration"] = int(t["prompt_ms"] * 1e6)
            out["eval_duration"] = int(t["predicted_ms"] * 1e6)
            prompt_tokens = t.get("prompt_n", prompt_tokens)
            completion_tokens = t.get("predicted_n", completion_tokens)
        if prompt_tokens is not None:
            out["prompt_eval_count"] = prompt_tokens
        if completion_tokens is not None:
            out["eval_count"] = completion_tokens
        return out


def chat_chunk(model: str, content: str, role: str = "assistant") -> dict[str, Any]:
    return {"model": model, "created_at": now_rfc3339(), "message": {"role": role, "content": content}, "done": False}


def generate_chunk(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": now_rfc3339(), "response": text, "done": False}


def error_message(chunk: dict[str, Any]) -> str | None:
    """The message of an error event in an OpenAI-style stream (``{"error": ...}``), else None."""
    err = chunk.get("error")
    if err is None:
        return None
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or "error")[:500]
    return str(err)[:500]


class ToolCallAccumulator:
    """Streamed OpenAI tool-call deltas (``index``, id, name, argument fragments) into whole calls."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for d in deltas:
            if not isinstance(d, dict):
                continue
            i = d.get("index", len(self.calls))
            call = self.calls.setdefault(i if isinstance(i, int) else 0, {"id": "", "name": "", "arguments": ""})
            fn = d.get("function") or {}
            call["id"] = d.get("id") or call["id"]
            call["name"] += fn.get("name") or ""
            args = fn.get("arguments")
            call["arguments"] += args if isinstance(args, str) else json.dumps(args) if args is not None else ""

    def openai(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c["id"] or f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for i, c in sorted(self.calls.items())
        ]

    def ollama(self) -> list[dict[str, Any]]:
        return tool_calls_to_ollama(self.openai())


def tool_calls_to_ollama(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) as Ollama's (arguments as an object)."""
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            args = {"_raw": raw}
        entry: dict[str, Any] = {"function": {"index": i, "name": fn.get("name", ""), "arguments": args}}
        if call.get("id"):
            entry["id"] = call["id"]
        out.append(entry)
    return out


class OllamaStream:
    """Translates an OpenAI stream (chat or completion chunks) into Ollama objects, and keeps what
    the final ``done`` object and a non-streamed answer need: text, tool calls, reason, usage."""

    def __init__(self, kind: str, model: str) -> None:
        self.kind = kind
        self.model = model
        self.timing = Timing()
        self.text: list[str] = []
        self.tools = ToolCallAccumulator()
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.counted = 0

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The Ollama objects to send for one OpenAI chunk (raises nothing; errors via :func:`error_message`)."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timing.backend = chunk["timings"]
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return []
        c = choices[0]
        self.finish = c.get("finish_reason") or self.finish
        delta = c.get("delta") if isinstance(c.get("delta"), dict) else None
        text = (delta or {}).get("content") if delta is not None else c.get("text")
        if delta and isinstance(delta.get("tool_calls"), list):
            self.timing.mark_first()
            self.tools.add(delta["tool_calls"])
        if not isinstance(text, str) or not text:
            return []
        self.counted += 1
        self.timing.mark_first()
        self.text.append(text)
        return [chat_chunk(self.model, text) if self.kind == "chat" else generate_chunk(self.model, text)]

    def tool_chunk(self) -> dict[str, Any] | None:
        """Ollama sends a model's tool calls whole, in one message before ``done``."""
        if not self.tools.calls or self.kind != "chat":
            return None
        out = chat_chunk(self.model, "")
        out["message"]["tool_calls"] = self.tools.ollama()
        return out

    def final(self) -> dict[str, Any]:
        """The closing object: done_reason, timings and token counts."""
        body: dict[str, Any] = {"model": self.model, "created_at": now_rfc3339(), "done": True}
        body["done_reason"] = FINISH_TO_DONE.get(self.finish or "stop", "stop")
        if self.kind == "chat":
            body["message"] = {"role": "assistant", "content": ""}
        else:
            body["response"] = ""
        body |= self.timing.fields(self.usage.get("prompt_tokens"), self.usage.get("completion_tokens", self.counted))
        return body

    def whole(self) -> dict[str, Any]:
        """The answer as one non-streamed Ollama object."""
        body = self.final()
        text = "".join(self.text)
        if self.kind == "chat":
            body["message"] = {"role": "assistant", "content": text}
            if self.tools.calls:
                body["message"]["tool_calls"] = self.tools.ollama()
        else:
            body["response"] = text
        return body


class OpenAIWhole:
    """An OpenAI stream aggregated into the non-streamed answer (``chat.completion`` or
    ``text_completion``): how the gateway answers a non-streamed request it streamed upstream."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.id = ""
        self.created = int(time.time())
        self.model = ""
        self.text: list[str] = []
        self.tools = ToolCallAccumulator()
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.counted = 0

    def feed(self, chunk: dict[str, Any]) -> None:
        self.id = self.id or str(chunk.get("id") or "")
        self.model = self.model or str(chunk.get("model") or "")
        if isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return
        c = choices[0]
        self.finish = c.get("finish_reason") or self.finish
        delta = c.get("delta") if isinstance(c.get("delta"), dict) else None
        text = (delta or {}).get("content") if delta is not None else c.get("text")
        if delta and isinstance(delta.get("tool_calls"), list):
            self.tools.add(delta["tool_calls"])
        if isinstance(text, str) and text:
            self.counted += 1
            self.text.append(text)

    def result(self, prompt_tokens: int | None = None) -> dict[str, Any]:
        text = "".join(self.text)
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish or "stop", "logprobs": None}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.tools.calls:
                message["tool_calls"] = self.tools.openai()
                message["content"] = text or None
            choice["message"] = message
        else:
            choice["text"] = text
        usage = self.usage or {
            "prompt_tokens": prompt_tokens or 0,
            "completion_tokens": self.counted,
            "total_tokens": (prompt_tokens or 0) + self.counted,
        }
        return {
            "id": self.id or f"{'chatcmpl' if self.chat else 'cmpl'}-homellm",
            "created": self.created,
            "object": "chat.completion" if self.chat else "text_completion",
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        }


def tag_entry(
    name: str, size: int = 0, details: dict[str, Any] | None = None, digest: str = "", modified_at: str = ""
) -> dict[str, Any]:
    """One model in an ``/api/tags`` body."""
    base = {"format": "gguf", "family": name.split(":")[0], "parameter_size": "", "quantization_level": ""}
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at or now_rfc3339(),
        "size": size,
        "digest": digest,
        "details": base | (details or {}),
    }


def embeddings_to_ollama(resp: dict[str, Any], model: str, legacy: bool, timing: Timing) -> dict[str, Any]:
    vectors = [d.get("embedding", []) for d in sorted(resp.get("data", []), key=lambda d: d.get("index", 0))]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    usage = resp.get("usage") or {}
    body: dict[str, Any] = {"model": model, "embeddings": vectors}
    fields = timing.fields(usage.get("prompt_tokens"), None)
    body["total_duration"] = fields["total_duration"]
    body["load_duration"] = 0
    if "prompt_eval_count" in fields:
        body["prompt_eval_count"] = fields["prompt_eval_count"]
    return body

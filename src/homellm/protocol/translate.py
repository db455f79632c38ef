"""Pure converters from the Ollama API to the OpenAI API and back.

Used when the front a client speaks is not the backend's (an Ollama client in
front of llama-server, vLLM, LM Studio or the embedded engine). No I/O here.
"""

from __future__ import annotations

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


def chat_to_openai(req: ChatRequest) -> dict[str, Any]:
    messages = []
    for m in req.messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content or ""}]
            parts += [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}} for img in m.images]
            msg["content"] = parts
        if m.tool_calls:
            msg["tool_calls"] = m.tool_calls
        messages.append(msg)
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": req.stream}
    body |= _sampling(req.options) | _response_format(req.format)
    if req.tools:
        body["tools"] = req.tools
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    return body


def generate_to_openai(req: GenerateRequest) -> tuple[str, dict[str, Any]]:
    """(path, body): templated prompts go to chat completions, raw ones to completions."""
    base = {"model": req.model, "stream": req.stream} | _sampling(req.options) | _response_format(req.format)
    if req.stream:
        base["stream_options"] = {"include_usage": True}
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
    """Nanosecond timing fields Ollama reports, measured by the gateway around the backend call."""

    def __init__(self) -> None:
        self.start = time.perf_counter_ns()
        self.first: int | None = None

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
        if prompt_tokens is not None:
            out["prompt_eval_count"] = prompt_tokens
        if completion_tokens is not None:
            out["eval_count"] = completion_tokens
        return out


def chat_chunk(model: str, content: str, role: str = "assistant") -> dict[str, Any]:
    return {"model": model, "created_at": now_rfc3339(), "message": {"role": role, "content": content}, "done": False}


def generate_chunk(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": now_rfc3339(), "response": text, "done": False}


def final_chunk(
    kind: str, model: str, finish_reason: str | None, timing: Timing, usage: dict[str, Any] | None, counted: int
) -> dict[str, Any]:
    """The closing NDJSON object with done_reason and timings; ``counted`` is the fallback token count."""
    usage = usage or {}
    body: dict[str, Any] = {"model": model, "created_at": now_rfc3339(), "done": True}
    body["done_reason"] = FINISH_TO_DONE.get(finish_reason or "stop", "stop")
    if kind == "chat":
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    body |= timing.fields(usage.get("prompt_tokens"), usage.get("completion_tokens", counted))
    return body


def chat_response_to_ollama(kind: str, model: str, resp: dict[str, Any], timing: Timing) -> dict[str, Any]:
    """A non-streamed OpenAI completion as one Ollama response object."""
    choice = (resp.get("choices") or [{}])[0]
    text = choice.get("message", {}).get("content") if "message" in choice else choice.get("text", "")
    body = final_chunk(kind, model, choice.get("finish_reason"), timing, resp.get("usage"), 0)
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text or ""}
        if choice.get("message", {}).get("tool_calls"):
            message["tool_calls"] = choice["message"]["tool_calls"]
        body["message"] = message
    else:
        body["response"] = text or ""
    return body


def openai_delta(chunk: dict[str, Any]) -> tuple[str, str | None]:
    """(content, finish_reason) of one streamed chat or completion chunk."""
    choices = chunk.get("choices") or []
    if not choices:
        return "", None
    c = choices[0]
    text = (c.get("delta") or {}).get("content") if "delta" in c else c.get("text")
    return text or "", c.get("finish_reason")


def models_to_tags(models: list[dict[str, Any]]) -> dict[str, Any]:
    """/v1/models entries as an /api/tags body."""
    out = []
    for m in models:
        name = m.get("id", "")
        created = m.get("created")
        modified = datetime.fromtimestamp(created, UTC).isoformat() if isinstance(created, int) else now_rfc3339()
        out.append(
            {
                "name": name,
                "model": name,
                "modified_at": modified,
                "size": 0,
                "digest": "",
                "details": {
                    "format": "gguf",
                    "family": name.split(":")[0],
                    "parameter_size": "",
                    "quantization_level": "",
                },
            }
        )
    return {"models": out}


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

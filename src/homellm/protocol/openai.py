"""OpenAI API request types (/v1/chat/completions, /v1/completions, /v1/embeddings), as the gateway reads them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatCompletionRequest(Wire):
    model: str
    messages: list[dict[str, Any]] = Field(default_factory=list)
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | str | None = None
    seed: int | None = None
    stream_options: dict[str, Any] | None = None


class CompletionRequest(Wire):
    model: str
    prompt: str | list[str] = ""
    stream: bool = False
    max_tokens: int | None = None


class EmbeddingRequest(Wire):
    model: str
    input: str | list[str] | list[int] | list[list[int]]

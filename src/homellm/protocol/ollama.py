"""Ollama API request types (github.com/ollama/ollama docs/api.md), as far as the gateway reads them.

Unknown fields are kept (``extra="allow"``) and passed through untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class Options(Wire):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    num_predict: int | None = None
    num_ctx: int | None = None
    stop: list[str] | str | None = None
    seed: int | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class Message(Wire):
    role: str
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatRequest(Wire):
    model: str
    messages: list[Message] = Field(default_factory=list)
    stream: bool = True  # Ollama streams unless told not to
    options: Options | None = None
    format: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    keep_alive: str | int | None = None


class GenerateRequest(Wire):
    model: str
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    raw: bool = False
    stream: bool = True
    options: Options | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: str | int | None = None


class EmbedRequest(Wire):
    model: str
    input: str | list[str]
    truncate: bool = True
    options: Options | None = None


class EmbeddingsRequest(Wire):
    model: str
    prompt: str
    options: Options | None = None


class ShowRequest(Wire):
    model: str | None = None
    name: str | None = None  # older clients

    @property
    def target(self) -> str:
        return self.model or self.name or ""

"""Counting a request's prompt tokens the way the engine will, for streams where it reports none.

llama-cpp-python's server sends no usage in streamed answers. This loads only the model's
vocabulary (``vocab_only``, a few MB) in the gateway process and repeats exactly what the engine
does before generating: the same chat formatter (the named format llama-cpp-python guesses from the
GGUF's template, else that Jinja template) and the same tokenizer flags.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


class PromptCounter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._llama: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._llama is None:
                import llama_cpp

                self._llama = llama_cpp.Llama(model_path=str(self.path), vocab_only=True, verbose=False)
            return self._llama

    def _formatter(self, llama: Any) -> Any:
        from llama_cpp import llama_chat_format as f

        named = {
            "chatml": f.format_chatml,
            "llama-3": f.format_llama3,
            "llama-2": f.format_llama2,
            "mistral-instruct": f.format_mistral_instruct,
        }
        fmt = llama.chat_format or "llama-2"
        if fmt in named:
            return named[fmt]
        key = "tokenizer.chat_template" if fmt == "chat_template.default" else f"tokenizer.{fmt}"
        eos, bos = llama.token_eos(), llama.token_bos()
        return f.Jinja2ChatFormatter(
            template=llama.metadata[key],
            eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def count(self, body: dict[str, Any]) -> int:
        """Prompt tokens of an OpenAI chat or completion request body."""
        llama = self._load()
        if isinstance(body.get("messages"), list):
            result = self._formatter(llama)(
                messages=body["messages"], tools=body.get("tools"), tool_choice=body.get("tool_choice")
            )
            return len(llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt)
        return len(llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))

"""``homellm chat``: an interactive chat with streaming, history, multi-line input and /commands.

Type a message and press Enter. Wrap several lines in triple quotes (\"\"\" ... \"\"\"). Ctrl-C stops
the answer being written; Ctrl-D or /bye leaves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from rich.console import Console

from homellm.connect.client import stream_chat
from homellm.errors import HomeLLMError
from homellm.i18n import N_, _
from homellm.untrusted import visible_stream

HELP = N_("""/model NAME   switch model        /system TEXT  set the system prompt
/clear        forget the chat     /save FILE    save the chat as JSON
/models       list models         /bye          leave (or Ctrl-D)
Multi-line input: start and end with \"\"\". Ctrl-C stops an answer.""")


class ChatSession:
    def __init__(self, client: httpx.Client, model: str, console: Console, read: Callable[[str], str] = input) -> None:
        self.client = client
        self.model = model
        self.console = console
        self.read = read
        self.system: str | None = None
        self.history: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def read_message(self) -> str | None:
        """One user message (None at end of input)."""
        try:
            line = self.read(">>> ")
        except EOFError:
            return None
        if line.strip().startswith('"""'):
            lines = [line.strip()[3:]]
            while not lines[-1].rstrip().endswith('"""'):
                try:
                    lines.append(self.read("... "))
                except EOFError:
                    break
            lines[-1] = lines[-1].rstrip().removesuffix('"""')
            return "\n".join(lines).strip()
        return line

    def command(self, text: str) -> bool:
        """Run a /command; False to leave."""
        name, _space, arg = text[1:].partition(" ")
        arg = arg.strip()
        if name in ("bye", "exit", "quit"):
            return False
        if name == "help" or name == "?":
            self.console.print(_(HELP))
        elif name == "model" and arg:
            self.model = arg
            self.console.print(_("[dim]now talking to {arg}[/]").format(arg=arg))
        elif name == "system":
            self.system = arg or None
            self.console.print("[dim]system prompt " + ("set[/]" if arg else "cleared[/]"))
        elif name == "clear":
            self.history.clear()
            self.console.print(_("[dim]chat cleared[/]"))
        elif name == "save" and arg:
            Path(arg).write_text(json.dumps({"model": self.model, "messages": self.messages()}, indent=2,
                                            ensure_ascii=False))  # fmt: skip
            self.console.print(_("[dim]saved to {arg}[/]").format(arg=arg))
        elif name == "models":
            r = self.client.get("/api/tags")
            for m in r.json().get("models", []):
                self.console.print(f"  {m['name']}")
        else:
            self.console.print(_("[red]unknown command /{name}[/]; /help lists them").format(name=name))
        return True

    def answer(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})
        reply = ""
        try:
            for piece in stream_chat(self.client, self.model, self.messages()):
                reply += piece
                self.console.print(visible_stream(piece), end="", soft_wrap=True, highlight=False, markup=False)
        except KeyboardInterrupt:
            self.console.print(_("\n[dim](stopped)[/]"), end="")
        except HomeLLMError as exc:
            self.history.pop()
            self.console.print(f"[red]{exc}[/]")
            return
        self.console.print()
        self.history.append({"role": "assistant", "content": reply})

    def run(self) -> None:
        self.console.print(
            _("[dim]chatting with {model}; /help for commands, Ctrl-D to leave[/]").format(model=self.model)
        )
        while True:
            try:
                text = self.read_message()
            except KeyboardInterrupt:
                self.console.print()
                continue
            if text is None:
                self.console.print()
                return
            if not text.strip():
                continue
            if text.startswith("/"):
                if not self.command(text.strip()):
                    return
                continue
            self.answer(text)

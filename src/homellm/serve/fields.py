"""Which request fields reach a backend, with their types and bounds (default-deny).

A key holder's body is screened before anything is forwarded: a field not listed for the route and
the backend is refused with 400, and listed fields are type- and size-checked. Backend-specific
fields pass only to the backends that know them (``top_k``, ``min_p`` ... to llama.cpp-family
servers). Fields that have crashed llama.cpp are refused outright: a raw ``grammar`` (its parser has
segfaulted on hostile input) is refused for every backend; ``response_format`` / ``format`` JSON
schemas are bounded in size and depth before llama-cpp-python turns them into a grammar.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homellm.errors import GatewayError
from homellm.i18n import N_, _

Check = Callable[[str, Any], None]

MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 16
MAX_TOOLS = 64
MAX_STOP = 8
MAX_STRING_FIELD = 1024


def _bad(name: str, what: str) -> GatewayError:
    return GatewayError(400, _("the field {name!r} must be {what}").format(name=name, what=what))


def _kind(*types: type, what: str) -> Check:
    def check(name: str, value: Any) -> None:
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise _bad(name, _(what))

    return check


def _number(low: float, high: float, integer: bool = False) -> Check:
    def check(name: str, value: Any) -> None:
        if value is None:
            return
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        if not ok or not low <= value <= high:
            kind = _("an integer") if integer else _("a number")
            raise _bad(name, _("{kind} from {low} to {high}").format(kind=kind, low=low, high=high))

    return check


def _text(limit: int = MAX_STRING_FIELD) -> Check:
    def check(name: str, value: Any) -> None:
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise _bad(name, _("a string of at most {n} characters").format(n=limit))

    return check


def _stop(name: str, value: Any) -> None:
    items = [value] if isinstance(value, str) else value
    if value is None:
        return
    if (
        not isinstance(items, list)
        or len(items) > MAX_STOP
        or not all(isinstance(s, str) and len(s) <= 256 for s in items)
    ):
        raise _bad(name, _("a string or a list of at most {n} strings").format(n=MAX_STOP))


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _bounded_json(name: str, value: Any) -> None:
    if value is None:
        return
    if len(json.dumps(value)) > MAX_SCHEMA_BYTES or _depth(value) > MAX_SCHEMA_DEPTH:
        raise _bad(
            name,
            _("at most {kb} KiB of JSON, nested at most {d} levels").format(
                kb=MAX_SCHEMA_BYTES // 1024, d=MAX_SCHEMA_DEPTH
            ),
        )


def _response_format(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad(name, _('an object with "type" text, json_object or json_schema'))
    _bounded_json(name, value)


def _ollama_format(name: str, value: Any) -> None:
    if value is None or value == "" or value == "json":
        return
    if not isinstance(value, dict):
        raise _bad(name, _('"json" or a JSON schema object'))
    _bounded_json(name, value)


def _tools(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) > MAX_TOOLS or not all(isinstance(t, dict) for t in value):
        raise _bad(name, _("a list of at most {n} tool objects").format(n=MAX_TOOLS))
    for tool in value:
        fn = tool.get("function")
        if (
            tool.get("type", "function") != "function"
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
        ):
            raise _bad(name, _('a list of {"type": "function", "function": {"name": ...}} objects'))
        if not isinstance(fn.get("parameters", {}), dict) or not isinstance(fn.get("description", ""), str):
            raise _bad(name, _("tools whose parameters are an object and description a string"))
    _bounded_json(name, value)


OLLAMA_ROLES = frozenset({"system", "user", "assistant", "tool"})
OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _messages(roles: frozenset[str], parts: bool) -> Check:
    """A list of message objects with a known role and text content (OpenAI also takes a list of parts)."""

    def check(name: str, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            raise _bad(name, _("a list of message objects"))
        for m in value:
            if not isinstance(m, dict):
                raise _bad(name, _("a list of message objects"))
            if m.get("role") not in roles:
                raise _bad(name, _("messages whose role is one of {roles}").format(roles=", ".join(sorted(roles))))
            content = m.get("content")
            ok = content is None or isinstance(content, str)
            if parts and isinstance(content, list):
                ok = all(isinstance(p, dict) and p.get("type") in ("text", "image_url", "input_audio") for p in content)
            if not ok:
                kind = _("text or a list of content parts") if parts else _("text")
                raise _bad(name, _("messages whose content is {kind}").format(kind=kind))
            calls = m.get("tool_calls")
            if calls is not None and (not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls)):
                raise _bad(name, _("messages whose tool_calls are a list of objects"))
            images = m.get("images")
            if images is not None and (not isinstance(images, list) or not all(isinstance(i, str) for i in images)):
                raise _bad(name, _("messages whose images are a list of base64 strings"))

    return check


def _logit_bias(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or len(value) > 300:
        raise _bad(name, _("an object of at most 300 token ids"))
    for token, bias in value.items():
        if not token.isdigit() or len(token) > 9 or isinstance(bias, bool) or not isinstance(bias, int | float):
            raise _bad(name, _("an object of token ids to numbers"))
        if not -100 <= bias <= 100:
            raise _bad(name, _("an object of token ids to numbers from -100 to 100"))


def _one(name: str, value: Any) -> None:
    if value is not None and value != 1:
        raise _bad(name, _("1 (one answer per request)"))


def _refused(reason: str) -> Check:
    def check(name: str, value: Any) -> None:
        raise GatewayError(
            400, _("the field {name!r} is not accepted by this gateway: {reason}").format(name=name, reason=_(reason))
        )

    return check


ANY: Check = lambda name, value: None  # noqa: E731 - checked elsewhere (model, messages) or free-form
BOOL = _kind(bool, what=N_("true or false"))
OBJECT = _kind(dict, what=N_("an object"))
LIST = _kind(list, what=N_("a list"))
STRING_OR_LIST = _kind(str, list, what=N_("a string or a list"))
GRAMMAR = _refused(N_("llama.cpp's grammar parser can crash on hostile input; use response_format with a JSON schema"))

# Ollama's options (api.Options and api.Runner), with bounds that keep a key holder from asking a
# backend to allocate absurd contexts or batches.
OLLAMA_OPTIONS: dict[str, Check] = {
    "num_ctx": _number(1, 1 << 20, True),
    "num_predict": _number(-2, 1 << 20, True),
    "num_keep": _number(-1, 1 << 20, True),
    "seed": _number(-(2**63), 2**63 - 1, True),
    "temperature": _number(0, 100),
    "top_k": _number(0, 1 << 20, True),
    "top_p": _number(0, 1),
    "min_p": _number(0, 1),
    "typical_p": _number(0, 1),
    "repeat_last_n": _number(-1, 1 << 20, True),
    "repeat_penalty": _number(0, 100),
    "presence_penalty": _number(-100, 100),
    "frequency_penalty": _number(-100, 100),
    "stop": _stop,
    "num_batch": _number(1, 1 << 16, True),
    "num_gpu": _number(-1, 1 << 16, True),
    "main_gpu": _number(0, 64, True),
    "num_thread": _number(0, 1024, True),
    "use_mmap": BOOL,
    "mirostat": _number(0, 2, True),
    "mirostat_tau": _number(0, 100),
    "mirostat_eta": _number(0, 100),
    "penalize_newline": BOOL,
    "tfs_z": _number(0, 100),
    "low_vram": BOOL,
    "numa": BOOL,
}

_OLLAMA_COMMON: dict[str, Check] = {
    "model": ANY,
    "stream": BOOL,
    "keep_alive": _kind(str, int, float, what=N_("a duration")),
    "options": OBJECT,
    "format": _ollama_format,
    "think": _kind(bool, str, what=N_("true, false or a level")),
    "truncate": BOOL,
    "shift": BOOL,
    "logprobs": BOOL,
    "top_logprobs": _number(0, 20, True),
}
_OPENAI_COMMON: dict[str, Check] = {
    "model": ANY,
    "stream": BOOL,
    "stream_options": OBJECT,
    "max_tokens": _number(0, 1 << 20, True),
    "max_completion_tokens": _number(0, 1 << 20, True),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "n": _one,
    "stop": _stop,
    "seed": _number(-(2**63), 2**63 - 1, True),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "logit_bias": _logit_bias,
    "logprobs": _kind(bool, int, what=N_("true, false or a number")),
    "top_logprobs": _number(0, 20, True),
    "user": _text(256),
    "response_format": _response_format,
    "grammar": GRAMMAR,
    "json_schema": _bounded_json,
}
# llama.cpp-family extras (llama-server, llama-cpp-python, vLLM accept these)
_LLAMA_EXTRAS: dict[str, Check] = {
    "top_k": _number(0, 1 << 20, True),
    "min_p": _number(0, 1),
    "repeat_penalty": _number(0, 100),
    "typical_p": _number(0, 1),
    "tfs_z": _number(0, 100),
    "mirostat_mode": _number(0, 2, True),
    "mirostat_tau": _number(0, 100),
    "mirostat_eta": _number(0, 100),
}

ROUTE_FIELDS: dict[str, dict[str, Check]] = {
    "chat": _OLLAMA_COMMON | {"messages": _messages(OLLAMA_ROLES, parts=False), "tools": _tools},
    "generate": _OLLAMA_COMMON
    | {
        "prompt": _kind(str, what=N_("a string")),
        "suffix": _kind(str, what=N_("a string")),
        "system": _kind(str, what=N_("a string")),
        "template": _kind(str, what=N_("a string")),
        "context": LIST,
        "raw": BOOL,
        "images": LIST,
    },
    "embed": {
        "model": ANY,
        "input": STRING_OR_LIST,
        "truncate": BOOL,
        "options": OBJECT,
        "keep_alive": _kind(str, int, float, what=N_("a duration")),
        "dimensions": _number(1, 1 << 16, True),
    },
    "embeddings": {
        "model": ANY,
        "prompt": _kind(str, what=N_("a string")),
        "options": OBJECT,
        "keep_alive": _kind(str, int, float, what=N_("a duration")),
    },
    "show": {"model": ANY, "name": ANY, "verbose": BOOL, "system": _kind(str, what=N_("a string"))},
    "openai_chat": _OPENAI_COMMON
    | {
        "messages": _messages(OPENAI_ROLES, parts=True),
        "tools": _tools,
        "tool_choice": _kind(str, dict, what=N_("a string or an object")),
        "parallel_tool_calls": BOOL,
        "reasoning_effort": _text(32),
    },
    "openai_completion": _OPENAI_COMMON
    | {"prompt": STRING_OR_LIST, "suffix": _kind(str, what=N_("a string")), "echo": BOOL, "best_of": _one},
    "openai_embeddings": {
        "model": ANY,
        "input": STRING_OR_LIST,
        "encoding_format": _text(16),
        "dimensions": _number(1, 1 << 16, True),
        "user": _text(256),
    },
}
LLAMA_FAMILY_ROUTES = ("openai_chat", "openai_completion")


@dataclass(frozen=True)
class FieldPolicy:
    """The screen for one backend: whether llama.cpp-family extras may pass."""

    llama_extras: bool

    def screen(self, op: str, body: dict[str, Any]) -> None:
        """Raise GatewayError(400) for a field that may not reach the backend."""
        allowed = ROUTE_FIELDS.get(op)
        if allowed is None:
            return  # management and listings are checked by their own rules
        extras = _LLAMA_EXTRAS if self.llama_extras and op in LLAMA_FAMILY_ROUTES else {}
        for name, value in body.items():
            check = allowed.get(name) or extras.get(name)
            if check is None:
                raise GatewayError(400, _("the field {name!r} is not accepted on this route").format(name=name[:64]))
            check(name, value)
        options = body.get("options")
        if isinstance(options, dict):
            for name, value in options.items():
                check = OLLAMA_OPTIONS.get(name)
                if check is None:
                    raise GatewayError(400, _("the option {name!r} is not accepted").format(name=name[:64]))
                check(name, value)

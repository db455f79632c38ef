"""Forwarding a checked request: pass-through when the front speaks the backend's API, translation
(through ``protocol/``) when it does not, and backend errors re-rendered in the front's shape.

What goes upstream is always the canonical re-encoding of the object the checks read, never the
client's bytes. Non-streamed requests are watched too: a client that leaves cancels the upstream
request; on backends that do not stop a non-streamed generation when its connection closes (the
embedded engine), the gateway streams upstream and assembles the answer itself.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from homellm import __version__
from homellm.errors import GatewayError
from homellm.i18n import _
from homellm.protocol import ollama as ow
from homellm.protocol import translate
from homellm.serve import relay
from homellm.serve.backends import JSON_HEADERS, Backend, BackendDown, ModelEntry
from homellm.serve.body import encode, encode_async
from homellm.serve.policy import Route
from homellm.serve.request import BytesReply, Ctx, Receive, Reply, json_reply
from homellm.settings import Settings

if TYPE_CHECKING:
    from homellm.serve.router import Lease, Router
    from homellm.serve.upstream import UpstreamResponse

log = logging.getLogger("homellm.gateway")
T = TypeVar("T")
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
MODELS_TTL = 10.0
# a backend's whole answer goes out as one of these types, never as its own choice: a pool member that
# answered with HTML would otherwise serve a page from the gateway's origin, where a signed-in browser's
# session cookie works (the web app)
ANSWER_TYPES = frozenset({"application/json", "application/x-ndjson", "text/plain"})
ANSWER_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}


class Forwarder:
    """Sends each request to a backend: the one backend itself (:attr:`Router.single`, the hot path), or
    the pool member the router picks for it (``_pooled``), retried on another member while nothing has
    reached the client."""

    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.router = router
        self._models: tuple[float, list[str]] = (-MODELS_TTL, [])

    # ---- what the backend has -----------------------------------------------------------

    async def model_names(self, refresh: bool = False) -> list[str]:
        import time

        b = self.router.single
        if b is None:
            return [e.name for e in self.router.entries()]
        stamp, names = self._models
        if refresh or time.monotonic() - stamp > MODELS_TTL:
            names = [m.name for m in await b.models()]
            self._models = (time.monotonic(), names)
        return names

    async def check_exists(self, ctx: Ctx) -> None:
        """OpenAI-style servers may answer for an unknown model with their default one: refuse it here.
        The message never names models outside the key's allowlist. (A pool knows each member's models.)"""
        b = self.router.single
        if b is None or b.kind == "ollama" or ctx.model is None:
            return
        if ctx.model not in await self.model_names() and ctx.model not in await self.model_names(refresh=True):
            assert ctx.key is not None
            visible = [n for n in await self.model_names() if ctx.key.may_use(n)]
            raise GatewayError(
                404,
                _("model {model!r} not found; you may use: {models}").format(
                    model=ctx.model, models=", ".join(visible) or _("none")
                ),
            )

    # ---- dispatch -----------------------------------------------------------------------

    async def dispatch(self, route: Route, ctx: Ctx, receive: Receive) -> Reply:
        b = self.router.single
        if b is None:
            return await self._pooled(route, ctx, receive)
        return await self._dispatch_on(b, route, ctx, receive)

    async def _dispatch_on(self, b: Backend, route: Route, ctx: Ctx, receive: Receive) -> Reply:
        op = route.op
        if op == "health":
            return await self._health(b, ctx)
        if op == "version":
            if b.kind == "ollama":
                return await self._pass(b, ctx, receive, None)
            return json_reply({"version": f"{__version__}-homellm"})
        if op in ("tags", "ps", "models", "model"):
            return await self._listing(b, op, ctx)
        if op in ("manage", "blob"):
            if b.kind != "ollama":
                raise GatewayError(
                    501,
                    _("model management needs an Ollama backend; {backend} cannot do it").format(backend=b.describe()),
                )
            body = encode(ctx.body) if route.json_body else ctx.raw
            return await self._pass(b, ctx, receive, body)
        assert ctx.body is not None
        if route.front == "openai" or b.kind == "ollama":
            return await self._pass_json(b, route, ctx, receive)
        return await self._translate(b, op, ctx, receive)

    # ---- the pool -----------------------------------------------------------------------

    async def _pooled(self, route: Route, ctx: Ctx, receive: Receive) -> Reply:
        """Listings and health from the whole pool; every other request on the member the router picks,
        and on another one when that member fails before anything reached the client."""
        router = self.router
        op = route.op
        if op == "health":
            return self._pool_health(ctx)
        if op in ("tags", "ps", "models", "model"):
            return self._pool_listing(op, ctx)
        if "ollama" not in router.kinds():
            if op == "version":
                return json_reply({"version": f"{__version__}-homellm"})
            if op in ("manage", "blob"):
                raise GatewayError(501, _("model management needs an Ollama backend; none in the pool can do it"))
        tried: frozenset[str] = frozenset()
        while True:
            lease = await self._lease(route, ctx, tried)
            member = lease.member
            ctx.stats.backend = member.name
            try:
                reply = await self._dispatch_on(member.backend, route, ctx, receive)
            except BackendDown as exc:  # nothing has reached the client yet: another member may answer
                router.failed(lease, str(exc))
                self._give_back(ctx, lease)
                tried |= {member.name}
                if not router.has_other(ctx.model, tried):
                    raise
                log.warning("pool: %s failed (%s); retrying on another backend", member.name, exc)
                continue
            except BaseException:
                self._give_back(ctx, lease)
                raise
            router.succeeded(lease, ctx.model)
            return reply

    async def _lease(self, route: Route, ctx: Ctx, tried: frozenset[str]) -> Lease:
        """A slot for an inference request (it may wait in its key's queue); a member for anything else."""
        from homellm.serve.router import Lease

        router = self.router
        if not route.inference:
            model = ctx.model
            if route.op in ("manage", "blob", "version"):  # only Ollama can: leave the others out
                tried |= {m.name for m in router.members if m.backend.kind != "ollama"}
                if model is not None and not any(m.has(model) for m in router.members):
                    model = None  # pulling or creating a model no member has yet
            member = router.find(model, tried)
            return Lease(router, member, member.breaker.begin(), slot=False)
        key = ctx.key
        assert key is not None
        lease = await router.acquire(ctx.model, key.name, key.priority, tried)
        ctx.lease = lease
        if lease.queue_ms is not None:
            ctx.stats.queue_ms, ctx.stats.queue_position = lease.queue_ms, lease.position
        return lease

    @staticmethod
    def _give_back(ctx: Ctx, lease: Lease) -> None:
        lease.release()
        if ctx.lease is lease:
            ctx.lease = None

    def _pool_listing(self, op: str, ctx: Ctx) -> Reply:
        key = ctx.key
        assert key is not None
        if op == "ps":
            return json_reply({"models": [m for m in self.router.loaded_now() if key.may_use(str(m.get("name", "")))]})
        entries = [m for m in self.router.entries() if key.may_use(m.name)]
        if op == "model":
            if ctx.model not in [e.name for e in entries]:
                raise GatewayError(404, _("model {model!r} not found").format(model=ctx.model))
            return json_reply({"id": ctx.model, "object": "model", "created": 0, "owned_by": "homellm"})
        return self._listed(op, entries)

    @staticmethod
    def _listed(op: str, entries: list[ModelEntry]) -> Reply:
        if op == "models":
            return json_reply(
                {
                    "object": "list",
                    "data": [{"id": m.name, "object": "model", "created": 0, "owned_by": "homellm"} for m in entries],
                }
            )
        return json_reply(
            {"models": [translate.tag_entry(m.name, m.size, m.details, m.digest, m.modified_at) for m in entries]}
        )

    def _pool_health(self, ctx: Ctx) -> Reply:
        """Admin keys see each backend (address, state, breaker, load, models); other keys only whether the
        pool answers and how many of their models it has: no addresses, no models outside their allowlist."""
        key = ctx.key
        assert key is not None
        members = self.router.members
        up = sum(1 for m in members if m.usable())
        visible = [e.name for e in self.router.entries() if key.may_use(e.name)]
        data: dict[str, Any] = {
            "backend": "ok" if up else "down",
            "describe": _("a pool of {n} backends, {up} up").format(n=len(members), up=up),
            "models": len(visible),
            "waiting": self.router.waiting(),
        }
        if key.admin:
            data["backends"] = self.router.status(key.may_use)
        if not up:
            data["detail"] = _("every backend in the pool is down")
        return json_reply(data, 200 if up else 502)

    # ---- pass-through -------------------------------------------------------------------

    async def _pass_json(self, b: Backend, route: Route, ctx: Ctx, receive: Receive) -> Reply:
        body = dict(ctx.body or {})
        streamed = bool(body.get("stream", route.front == "ollama"))
        if route.front == "openai" and not streamed and route.op != "openai_embeddings" and not b.stops_on_disconnect:
            return await self._openai_collected(b, route, ctx, receive, body)
        want_usage = bool(
            streamed and isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")
        )
        return await self._pass(
            b,
            ctx,
            receive,
            await encode_async(body, len(ctx.raw)),
            want_usage=want_usage,
            pool_embeddings=route.op == "openai_embeddings",
        )

    async def _pass(
        self, b: Backend, ctx: Ctx, receive: Receive, body: bytes | None, want_usage: bool = False,
        pool_embeddings: bool = False,
    ) -> Reply:  # fmt: skip
        """Send the checked request upstream unchanged in meaning (the key is not forwarded) and relay the answer."""
        headers = JSON_HEADERS if body else None
        upstream = await b.open(ctx.method, ctx.path, body, headers)
        ctype = upstream.content_type
        if upstream.status < 400 and ("ndjson" in ctype or "event-stream" in ctype):
            sse = "event-stream" in ctype
            records = relay.records(upstream, b"\n\n" if sse else b"\n", b)
            chunks = relay.sse_passthrough(records, ctx, want_usage) if sse else relay.ndjson_passthrough(records, ctx)
            return self._relay(chunks, upstream, SSE if sse else NDJSON, ctx)
        content = await b.read(upstream)
        if upstream.status >= 400:
            raise backend_error(upstream.status, content)
        if pool_embeddings:
            content = _pool_openai_embeddings(content)
        _note_usage(ctx, content)
        return BytesReply(content, upstream.status, answer_type(ctype), ANSWER_HEADERS)

    async def _openai_collected(
        self, b: Backend, route: Route, ctx: Ctx, receive: Receive, body: dict[str, Any]
    ) -> Reply:
        """A non-streamed OpenAI request, streamed upstream and answered whole (so that leaving stops it)."""
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        whole = translate.OpenAIWhole(chat=route.op == "openai_chat")
        await self._collect(b, ctx, receive, encode(body), whole)
        prompt = ctx.stats.prompt_tokens
        if whole.usage is None and prompt is None:
            prompt = await self.backend_prompt_tokens(b, ctx)
        result = whole.result(prompt)
        ctx.stats.prompt_tokens = result["usage"].get("prompt_tokens")
        ctx.stats.completion_tokens = result["usage"].get("completion_tokens")
        return json_reply(result)

    async def _collect(
        self,
        b: Backend,
        ctx: Ctx,
        receive: Receive,
        payload: bytes,
        sink: translate.OllamaStream | translate.OpenAIWhole,
        path: str | None = None,
    ) -> None:
        upstream = await b.open("POST", path or ctx.path, payload, JSON_HEADERS)
        await self._expect_sse(b, upstream)
        records = relay.records(upstream, b"\n\n", b)
        try:
            await relay.collect_openai(records, ctx, sink)
        except relay.UpstreamError as exc:
            raise exc.error from None
        finally:
            await records.aclose()  # type: ignore[attr-defined]

    async def _expect_sse(self, b: Backend, upstream: UpstreamResponse) -> None:
        """A streamed request must be answered with a stream: an error in the front's shape otherwise."""
        if upstream.status >= 400:
            raise backend_error(upstream.status, await b.read(upstream))
        if "event-stream" not in upstream.content_type:
            await b.read(upstream)
            raise GatewayError(502, _("the backend answered a streamed request without streaming"))

    @staticmethod
    async def backend_prompt_tokens(b: Backend, ctx: Ctx) -> int | None:
        count = getattr(b, "prompt_tokens", None)
        if count is None or ctx.body is None:
            return None
        result: int | None = await count(ctx.body)
        return result

    def _relay(self, chunks: AsyncIterator[bytes], upstream: UpstreamResponse, media_type: str, ctx: Ctx) -> Reply:
        return relay.Relay(chunks, upstream, media_type, ctx, self.settings.send_timeout_s)

    # ---- translation: an Ollama client in front of an OpenAI-compatible backend ---------

    async def _translate(self, b: Backend, op: str, ctx: Ctx, receive: Receive) -> Reply:
        assert ctx.body is not None and ctx.model is not None
        try:
            if op == "chat":
                chat = ow.ChatRequest.model_validate(ctx.body)
                return await self._completion(
                    b, "chat", "/v1/chat/completions", translate.chat_to_openai(chat), chat.stream, ctx, receive
                )
            if op == "generate":
                gen = ow.GenerateRequest.model_validate(ctx.body)
                if not gen.prompt and not gen.raw:  # Ollama's "load the model" call
                    return json_reply(
                        {
                            "model": gen.model,
                            "created_at": translate.now_rfc3339(),
                            "response": "",
                            "done": True,
                            "done_reason": "load",
                        }
                    )
                path, payload = translate.generate_to_openai(gen)
                return await self._completion(b, "generate", path, payload, gen.stream, ctx, receive)
            if op in ("embed", "embeddings"):
                req: ow.EmbedRequest | ow.EmbeddingsRequest = (
                    ow.EmbedRequest.model_validate(ctx.body)
                    if op == "embed"
                    else ow.EmbeddingsRequest.model_validate(ctx.body)
                )
                return await self._embed(b, req, op == "embeddings", ctx, receive)
            if op == "show":
                return json_reply(await self._show(b, ctx.model))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise GatewayError(
                400, _("invalid request: {where}: {msg}").format(where=where, msg=first["msg"])
            ) from None
        raise GatewayError(404, _("no such endpoint: {path}").format(path=ctx.path))

    async def _completion(
        self, b: Backend, kind: str, path: str, payload: dict[str, Any], stream: bool, ctx: Ctx, receive: Receive
    ) -> Reply:
        assert ctx.model is not None
        out = translate.OllamaStream(kind, ctx.model)
        if not stream:
            await self._collect(b, ctx, receive, encode(payload), out, path)
            await self._fill_prompt_tokens(b, ctx, out)
            whole = out.whole()
            ctx.stats.prompt_tokens = whole.get("prompt_eval_count")
            ctx.stats.completion_tokens = whole.get("eval_count")
            return json_reply(whole)
        upstream = await b.open("POST", path, encode(payload), JSON_HEADERS)
        await self._expect_sse(b, upstream)
        records = relay.records(upstream, b"\n\n", b)
        chunks = relay.ndjson_from_openai(records, ctx, out, lambda: self._fill_prompt_tokens(b, ctx, out))
        return self._relay(chunks, upstream, NDJSON, ctx)

    async def _fill_prompt_tokens(self, b: Backend, ctx: Ctx, out: translate.OllamaStream) -> None:
        if not out.usage.get("prompt_tokens"):
            counted = await self.backend_prompt_tokens(b, ctx)
            if counted is not None:
                out.usage = {**out.usage, "prompt_tokens": counted}

    async def _embed(
        self, b: Backend, req: ow.EmbedRequest | ow.EmbeddingsRequest, legacy: bool, ctx: Ctx, receive: Receive
    ) -> Reply:
        timing = translate.Timing()
        payload = encode(translate.embed_to_openai(req))
        upstream = await b.open("POST", "/v1/embeddings", payload, JSON_HEADERS)
        content = await b.read(upstream)
        if upstream.status >= 400:
            raise backend_error(upstream.status, content)
        resp = _json(_pool_openai_embeddings(content))
        _note_usage(ctx, content)
        return json_reply(translate.embeddings_to_ollama(resp, req.model, legacy, timing))

    @staticmethod
    async def _show(b: Backend, model: str) -> dict[str, Any]:
        describe = getattr(b, "show", None)
        if describe is not None:
            shown: dict[str, Any] | None = await describe(model)
            if shown is not None:
                return shown
        return _catalog_show(model)

    # ---- listings and health ------------------------------------------------------------

    async def _listing(self, b: Backend, op: str, ctx: Ctx) -> Reply:
        key = ctx.key
        assert key is not None
        if op == "model":
            names = [n for n in await self.model_names() if key.may_use(n)]
            if ctx.model not in names:
                raise GatewayError(404, _("model {model!r} not found").format(model=ctx.model))
            return json_reply({"id": ctx.model, "object": "model", "created": 0, "owned_by": "homellm"})
        if op == "ps":
            loaded = [m for m in await b.loaded() if key.may_use(str(m.get("name", "")))]
            return json_reply({"models": loaded})
        if b.kind == "ollama" and op == "tags":
            data = await b.get_json("/api/tags")
            data["models"] = [
                m for m in data.get("models", []) if isinstance(m, dict) and key.may_use(str(m.get("name", "")))
            ]
            return json_reply(data)
        return self._listed(op, [m for m in await b.models() if key.may_use(m.name)])

    async def _health(self, b: Backend, ctx: Ctx) -> Reply:
        assert ctx.key is not None
        try:
            names = [n for n in await self.model_names(refresh=True) if ctx.key.may_use(n)]
        except GatewayError as exc:
            return json_reply({"backend": "down", "detail": str(exc)}, exc.status)
        describe = (
            b.describe()
            if ctx.key.models is None
            else _("{backend} (models hidden for this key)").format(backend=_(b.label))
        )
        return json_reply({"backend": "ok", "describe": describe, "models": len(names)})


def answer_type(ctype: str) -> bytes:
    """The ``Content-Type`` of a backend's whole answer as the gateway sends it: JSON unless the backend
    said JSON, NDJSON or plain text (parameters dropped; text is UTF-8)."""
    media = ctype.split(";", 1)[0].strip().lower()
    if media not in ANSWER_TYPES:
        media = "application/json"
    return (media + "; charset=utf-8" if media == "text/plain" else media).encode()


def backend_error(status: int, content: bytes) -> GatewayError:
    """A backend's error as the gateway's: client mistakes stay 4xx with a short message, the rest is 502."""
    message = _short_message(content)
    if status == 422:
        status = 400
    mapped = status if status in (400, 404, 413, 429, 503) else 502
    kind = BackendDown if status in (502, 503, 504) else GatewayError  # it cannot serve now; another might
    return kind(mapped, _("backend: {message}").format(message=message))


def _short_message(content: bytes) -> str:
    """The human part of an error body: Ollama's ``error``, OpenAI's ``error.message``, FastAPI's ``detail``."""
    try:
        data = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", errors="replace").strip()
        return _printable(text) or _("(no message)")
    if isinstance(data, dict):
        err = data.get("error", data.get("detail"))
        if isinstance(err, dict):
            err = err.get("message") or err.get("type")
        if isinstance(err, list) and err and isinstance(err[0], dict):  # pydantic/FastAPI validation errors
            first: dict[str, Any] = err[0]
            where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
            msg = str(first.get("msg", ""))
            err = f"{where}: {msg}" if where else msg
        if err is not None:
            return _printable(str(err)) or _("(no message)")
    return _("(no message)")


_INTERNALS = ("Traceback (most recent call last)", 'File "', "validation error", "{'", "<class '", "object at 0x")


def _printable(text: str, limit: int = 300) -> str:
    """A backend's message fit to show a client: printable, bounded, and never a traceback or a Python repr
    (which carry server paths and echo the request); those are logged and replaced by a plain sentence."""
    if any(marker in text for marker in _INTERNALS):
        log.warning("backend error (not shown to the client): %s", text[:2000])
        return _("the backend refused the request (details in the server's log)")
    cleaned = "".join(c if c.isprintable() else " " for c in text[: limit * 2])
    return cleaned[:limit].strip()


def _json(content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content)
    except ValueError:
        raise GatewayError(502, _("the backend sent invalid JSON")) from None
    return data if isinstance(data, dict) else {}


_COUNTS = re.compile(rb'"(prompt_eval_count|eval_count|prompt_tokens|completion_tokens)"\s*:\s*(\d{1,12})')


def _note_usage(ctx: Ctx, content: bytes) -> None:
    """Token counts of a whole answer (Ollama's or OpenAI's field names), read without parsing the JSON."""
    found = {m[1]: int(m[2]) for m in _COUNTS.finditer(content[-1024:])}
    prompt = found.get(b"prompt_tokens", found.get(b"prompt_eval_count"))
    completion = found.get(b"completion_tokens", found.get(b"eval_count"))
    if prompt is not None or completion is not None:
        ctx.stats.prompt_tokens, ctx.stats.completion_tokens = prompt, completion


def _pool_openai_embeddings(content: bytes) -> bytes:
    """Mean-pool per-token embeddings (llama-cpp-python without pooling) into one vector per input."""
    data = _json(content)
    changed = False
    for item in data.get("data", []):
        vec = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vec, list) and vec and isinstance(vec[0], list):
            n = len(vec)
            item["embedding"] = [sum(col) / n for col in zip(*vec, strict=True)]
            changed = True
    return json.dumps(data).encode() if changed else content


def _catalog_show(model: str) -> dict[str, Any]:
    """/api/show for a backend that cannot describe its model, from the catalog where homellm knows it."""
    from homellm.catalog import load_catalog
    from homellm.errors import NotFoundError

    details: dict[str, Any] = {"format": "gguf", "family": model.split(":")[0]}
    info: dict[str, Any] = {}
    try:
        spec = load_catalog().model(model)
        details |= {"parameter_size": f"{spec.params_total / 1e9:.1f}B", "quantization_level": spec.default_quant}
        a = spec.architecture
        info = {
            "general.architecture": a.arch,
            f"{a.arch}.context_length": a.n_ctx_train,
            f"{a.arch}.embedding_length": a.n_embd,
            f"{a.arch}.block_count": a.n_layer,
        }
    except NotFoundError:
        pass
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details,
        "model_info": info,
        "capabilities": ["completion", "embedding"],
    }

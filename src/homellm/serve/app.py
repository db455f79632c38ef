"""The gateway as an ASGI app: checks, in order, then forward or translate.

Every request passes: client IP allowlist, Host guard (DNS rebinding), CORS origin, route
table (default-deny), API key, admin scope, rate limit, body size, JSON, model allowlist,
concurrency. Only then does it reach the backend. Errors are rendered in the front's own
shape: Ollama ``{"error": ...}``, OpenAI ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from homellm import __version__
from homellm.discovery import Advertiser
from homellm.errors import GatewayError
from homellm.protocol import ollama as ow
from homellm.protocol import translate
from homellm.serve.auth import presented_key
from homellm.serve.backends import Backend, backend_failure
from homellm.serve.limits import ConcurrencyLimiter, RateLimiter, retry_after
from homellm.serve.metrics import Metrics
from homellm.serve.network import allowed_host_names, host_of, ip_allowed, parse_networks
from homellm.serve.policy import Front, Route, front_of, match
from homellm.serve.relay import (
    RelayResponse,
    StreamStats,
    ollama_passthrough,
    openai_to_ollama_stream,
    sse_passthrough,
)
from homellm.settings import Settings
from homellm.store.keys import ApiKey, KeyStore
from homellm.store.pairing import Pairing
from homellm.store.usage import UsageRecord, UsageWriter

log = logging.getLogger("homellm.gateway")
Reply = Response | RelayResponse
MODELS_TTL = 10.0


@dataclass
class Ctx:
    """One request's facts, collected on the way through, for the usage log."""

    front: Front
    method: str
    path: str
    client_ip: str
    route: str = ""
    key: ApiKey | None = None
    model: str | None = None
    prompt: str | None = None
    status: int = 200
    started: float = field(default_factory=time.perf_counter)
    slot: bool = False
    counts: StreamStats | None = None  # token counts read from a non-streamed JSON answer


def error_response(front: Front, exc: GatewayError, cors: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any]
    if front == "openai":
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        body = {"error": {"message": str(exc), "type": kind, "code": exc.code}}
    else:
        body = {"error": str(exc)}
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="homellm"')
    headers.update(cors or {})
    return JSONResponse(body, status_code=exc.status, headers=headers)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        keys: KeyStore,
        usage: UsageWriter,
        fingerprint: str | None = None,
        advertiser: Advertiser | None = None,
    ) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.advertiser = advertiser
        self.pairing = Pairing(keys.db)
        self.backend = backend
        self.keys = keys
        self.usage = usage
        self.networks = parse_networks(settings.allow_cidrs)
        self.hosts = allowed_host_names(settings.host, settings.allowed_hosts)
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.cors_origins)
        self.rate = RateLimiter(settings.requests_per_minute)
        self.slots = ConcurrencyLimiter(settings.max_streams_per_key)
        self.metrics = Metrics()
        self._models: tuple[float, list[str]] = (0.0, [])

    # ---- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        client = scope.get("client") or ("", 0)
        ctx = Ctx(front_of(scope["path"]), scope["method"], scope["path"], client[0])
        cors = self._cors_headers(request)
        try:
            response = await self._handle(request, ctx, cors)
        except GatewayError as exc:
            ctx.status = exc.status
            response = error_response(ctx.front, exc, cors)
        except ClientDisconnect:
            ctx.status = 499
            self._release(ctx)
            self._record(ctx, StreamStats(cancelled=True))
            return
        if isinstance(response, RelayResponse):
            await response(scope, receive, send)  # records itself when the stream ends
            return
        self._release(ctx)
        await response(scope, receive, send)
        self._record(ctx, None)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.backend.start()
                    if self.advertiser is not None:
                        await self.advertiser.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.advertiser is not None:
                    await self.advertiser.stop()
                await self.backend.close()
                self.usage.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- checks ---------------------------------------------------------------------------

    def _cors_headers(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin and origin.rstrip("/").lower() in self.origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    async def _handle(self, request: Request, ctx: Ctx, cors: dict[str, str]) -> Reply:
        if not ip_allowed(ctx.client_ip, self.networks):
            raise GatewayError(403, f"your address {ctx.client_ip} is not in this server's allowlist")
        host = host_of(request.headers.get("host", ""))
        if host not in self.hosts:
            raise GatewayError(403, f"Host {host!r} is not a name of this server (DNS rebinding guard)")
        origin = request.headers.get("origin")
        if origin and not cors:
            raise GatewayError(403, f"origin {origin} is not allowed; add it to cors_origins")
        if ctx.method == "OPTIONS":
            if not origin:
                raise GatewayError(405, "OPTIONS is only answered for CORS preflight requests")
            return Response(status_code=204, headers=cors | {
                "Access-Control-Allow-Methods": "GET, POST, DELETE, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Api-Key",
                "Access-Control-Max-Age": "600",
            })  # fmt: skip
        route, path_model, other_method = match(ctx.method, ctx.path)
        if route is None:
            if other_method:
                raise GatewayError(405, f"{ctx.method} is not allowed on {ctx.path}")
            raise GatewayError(404, f"no such endpoint: {ctx.method} {ctx.path}")
        ctx.front, ctx.route = route.front, ctx.path if route.op != "manage" else ctx.path.split("/sha256")[0]
        if route.op == "pair":
            return await self._pair(request)
        if route.public:
            return PlainTextResponse("Ollama is running", headers=cors)
        ctx.key = self._authenticate(request)
        if route.admin and not ctx.key.admin:
            raise GatewayError(403, f"{ctx.path} needs an admin key")
        wait = self.rate.check(ctx.key.name)
        if wait:
            raise GatewayError(429, f"rate limit of {self.settings.requests_per_minute} requests per minute reached",
                               headers={"Retry-After": retry_after(wait)})  # fmt: skip
        body = await self._read_body(request, route)
        if path_model is not None:
            ctx.model = path_model
            self._check_model(ctx, path_model)
        if route.model_field:
            model = body.get(route.model_field) or (body.get("name") if route.op == "show" else None)
            if not isinstance(model, str) or not model.strip():
                raise GatewayError(400, f'the request needs a "{route.model_field}" field naming a model')
            ctx.model = model
            self._check_model(ctx, model)
            if self.settings.log_prompts:
                ctx.prompt = _prompt_text(body)
            await self._check_exists(model)
        if route.inference:
            if not self.slots.acquire(ctx.key.name):
                raise GatewayError(429, f"{self.settings.max_streams_per_key} requests are already running for "
                                   f"key {ctx.key.name!r}", headers={"Retry-After": "1"})  # fmt: skip
            ctx.slot = True
        response = await self._dispatch(route, request, body, ctx)
        if (cors and isinstance(response, Response)) or (cors and isinstance(response, RelayResponse)):
            response.headers.update(cors)
        return response

    async def _pair(self, request: Request) -> Response:
        """Pairing v2: SPAKE2 keyed by the code, each side confirming the certificate (serve/pairing.py)."""
        from homellm.serve import pairing

        body = await pairing.read_body(request)
        sessions: pairing.PairSessions = self.__dict__.setdefault("pair_sessions", pairing.PairSessions())
        peer = request.client.host if request.client else ""
        status, answer = pairing.handle(request.url.path, body, peer, self.pairing, self.keys, sessions,
                                        self.fingerprint)  # fmt: skip
        return JSONResponse(answer, status_code=status)

    def _authenticate(self, request: Request) -> ApiKey:
        presented = presented_key(request.headers)
        if presented is None:
            raise GatewayError(401, "an API key is required: send 'Authorization: Bearer <key>'")
        key = self.keys.verify(presented)
        if key is None:
            raise GatewayError(401, "the API key is invalid, revoked or expired")
        return key

    async def _read_body(self, request: Request, route: Route) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        limit = self.settings.max_body_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            raise GatewayError(413, f"the request body is larger than {limit} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise GatewayError(413, f"the request body is larger than {limit} bytes")
        request.state.raw_body = bytes(raw)
        if route.op in ("manage", "metrics") or request.method in ("GET", "HEAD"):
            return {}
        if not raw.strip():
            raise GatewayError(400, "the request body is empty; send a JSON object")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GatewayError(400, f"the request body is not valid JSON ({exc.msg} at char {exc.pos})") from None
        except ValueError:
            raise GatewayError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "the request body must be a JSON object")
        return body

    def _check_model(self, ctx: Ctx, model: str) -> None:
        assert ctx.key is not None
        if not ctx.key.may_use(model):
            raise GatewayError(403, f"key {ctx.key.name!r} may not use model {model!r}")

    async def _backend_models(self, refresh: bool = False) -> list[str]:
        stamp, names = self._models
        if refresh or time.monotonic() - stamp > MODELS_TTL:
            names = [m.name for m in await self.backend.models()]
            self._models = (time.monotonic(), names)
        return names

    async def _check_exists(self, model: str) -> None:
        """OpenAI-style servers may answer for an unknown model with their default one: refuse it here."""
        if self.backend.kind == "ollama":
            return  # Ollama answers 404 itself
        names = await self._backend_models()
        if model not in names and model not in await self._backend_models(refresh=True):
            raise GatewayError(404, f"model {model!r} not found; this server has: {', '.join(names) or 'none'}")

    def _visible(self, key: ApiKey | None, names: list[str]) -> list[str]:
        return [n for n in names if key is None or key.may_use(n)]

    # ---- forwarding -----------------------------------------------------------------------

    async def _dispatch(self, route: Route, request: Request, body: dict[str, Any], ctx: Ctx) -> Reply:
        b = self.backend
        op = route.op
        if op == "metrics":
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")
        if op == "health":
            try:
                names = await self._backend_models(refresh=True)
            except GatewayError as exc:
                return JSONResponse({"backend": "down", "detail": str(exc)}, status_code=exc.status)
            return JSONResponse({"backend": "ok", "describe": b.describe(), "models": len(names)})
        if op == "version":
            if b.kind == "ollama":
                return await self._forward(request, ctx)
            return JSONResponse({"version": f"{__version__}-homellm"})
        if op in ("tags", "ps", "models", "model"):
            return await self._listing(op, request, ctx)
        if route.front == "openai" or b.kind == "ollama":
            if op == "manage" and b.kind != "ollama":
                raise GatewayError(501, "model management needs an Ollama backend")
            return await self._forward(request, ctx, normalize_embeddings=op == "openai_embeddings")
        if op == "manage":
            raise GatewayError(501, f"model management needs an Ollama backend; {b.describe()} cannot do it")
        return await self._translate(op, body, ctx)

    async def _send(self, method: str, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        self.backend.ready()
        req = self.backend.client.build_request(method, path, content=content, headers=headers)
        try:
            return await self.backend.client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise backend_failure(exc, self.backend) from exc

    async def _forward(self, request: Request, ctx: Ctx, normalize_embeddings: bool = False) -> Reply:
        """Pass the request through unchanged (the key is not forwarded) and relay the answer."""
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        upstream = await self._send(ctx.method, ctx.path, request.state.raw_body, headers)
        ctype = upstream.headers.get("content-type", "")
        if upstream.status_code < 400 and ("ndjson" in ctype or "event-stream" in ctype):
            stats = StreamStats(started=ctx.started)
            chunks = ollama_passthrough(upstream, stats) if "ndjson" in ctype else sse_passthrough(upstream, stats)
            return self._relay(chunks, upstream.status_code, ctype, stats, ctx)
        content = await self._read_answer(upstream)
        if upstream.status_code >= 400:
            return self._backend_error(ctx, upstream.status_code, content)
        if normalize_embeddings:
            content = _pool_openai_embeddings(content)
        self._note_usage_json(ctx, content)
        return Response(content, status_code=upstream.status_code, media_type=ctype or "application/json")

    async def _read_answer(self, upstream: httpx.Response) -> bytes:
        """The whole body of a non-streamed backend answer; transport errors become 502/504."""
        try:
            return await upstream.aread()
        except httpx.HTTPError as exc:
            raise backend_failure(exc, self.backend) from exc
        finally:
            await upstream.aclose()

    def _backend_error(self, ctx: Ctx, status: int, content: bytes) -> Response:
        """Re-render a backend error in the front's shape, keeping its status and message."""
        message = content.decode(errors="replace")[:500]
        try:
            parsed = json.loads(content)
            err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        except ValueError:
            pass
        mapped = status if status in (400, 404, 413, 429) else 502
        ctx.status = mapped
        return error_response(ctx.front, GatewayError(mapped, f"backend: {message}"))

    def _relay(self, chunks: AsyncIterator[bytes], status: int, ctype: str, stats: StreamStats, ctx: Ctx) -> Reply:
        self.metrics.active.inc()

        def done(s: StreamStats) -> None:
            self.metrics.active.dec()
            self._release(ctx)
            self._record(ctx, s)

        return RelayResponse(chunks, status, ctype, stats, done)

    async def _listing(self, op: str, request: Request, ctx: Ctx) -> Reply:
        b = self.backend
        if op == "model":
            names = self._visible(ctx.key, await self._backend_models())
            if ctx.model not in names:
                raise GatewayError(404, f"model {ctx.model!r} not found")
            return JSONResponse({"id": ctx.model, "object": "model", "created": 0, "owned_by": "homellm"})
        if b.kind == "ollama" and op in ("tags", "ps"):
            data = await b.get_json(ctx.path)
            data["models"] = [
                m for m in data.get("models", []) if ctx.key is None or ctx.key.may_use(m.get("name", ""))
            ]
            return JSONResponse(data)
        if b.kind == "openai" and op == "models":
            data = await b.get_json("/v1/models")
            data["data"] = [m for m in data.get("data", []) if ctx.key is None or ctx.key.may_use(m.get("id", ""))]
            return JSONResponse(data)
        names = self._visible(ctx.key, await self._backend_models())
        if op == "models":  # OpenAI listing from an Ollama backend
            return JSONResponse({"object": "list", "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "homellm"} for n in names]})  # fmt: skip
        tags = translate.models_to_tags([{"id": n} for n in names])
        if op == "ps":
            for m in tags["models"]:
                m["expires_at"] = "0001-01-01T00:00:00Z"
                m["size_vram"] = 0
        return JSONResponse(tags)

    async def _translate(self, op: str, body: dict[str, Any], ctx: Ctx) -> Reply:
        """An Ollama request to an OpenAI-compatible backend."""
        try:
            if op == "chat":
                chat = ow.ChatRequest.model_validate(body)
                return await self._completion(
                    "chat", "/v1/chat/completions", translate.chat_to_openai(chat), chat.stream, ctx
                )
            if op == "generate":
                gen = ow.GenerateRequest.model_validate(body)
                if not gen.prompt and not gen.raw:  # Ollama's "load the model" call
                    return JSONResponse({"model": gen.model, "created_at": translate.now_rfc3339(), "response": "",
                                         "done": True, "done_reason": "load"})  # fmt: skip
                path, payload = translate.generate_to_openai(gen)
                return await self._completion("generate", path, payload, gen.stream, ctx)
            if op in ("embed", "embeddings"):
                req: ow.EmbedRequest | ow.EmbeddingsRequest = (
                    ow.EmbedRequest.model_validate(body) if op == "embed" else ow.EmbeddingsRequest.model_validate(body)
                )
                return await self._embed(req, op == "embeddings", ctx)
            if op == "show":
                return JSONResponse(_show(ow.ShowRequest.model_validate(body).target))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise GatewayError(400, f"invalid request: {where}: {first['msg']}") from None
        raise GatewayError(404, f"no such endpoint: {ctx.path}")

    async def _completion(self, kind: str, path: str, payload: dict[str, Any], stream: bool, ctx: Ctx) -> Reply:
        assert ctx.model is not None
        timing = translate.Timing()
        upstream = await self._send("POST", path, json.dumps(payload).encode(), {"content-type": "application/json"})
        if upstream.status_code < 400 and stream:
            stats = StreamStats(started=ctx.started)
            chunks = openai_to_ollama_stream(upstream, kind, ctx.model, stats)
            return self._relay(chunks, 200, "application/x-ndjson", stats, ctx)
        content = await self._read_answer(upstream)
        if upstream.status_code >= 400:
            return self._backend_error(ctx, upstream.status_code, content)
        resp = _json(content)
        self._note_usage_json(ctx, content)
        return JSONResponse(translate.chat_response_to_ollama(kind, ctx.model, resp, timing))

    async def _embed(self, req: ow.EmbedRequest | ow.EmbeddingsRequest, legacy: bool, ctx: Ctx) -> Reply:
        timing = translate.Timing()
        payload = json.dumps(translate.embed_to_openai(req)).encode()
        upstream = await self._send("POST", "/v1/embeddings", payload, {"content-type": "application/json"})
        content = await self._read_answer(upstream)
        if upstream.status_code >= 400:
            return self._backend_error(ctx, upstream.status_code, content)
        resp = _json(_pool_openai_embeddings(content))
        self._note_usage_json(ctx, content)
        return JSONResponse(translate.embeddings_to_ollama(resp, req.model, legacy, timing))

    # ---- bookkeeping ----------------------------------------------------------------------

    def _note_usage_json(self, ctx: Ctx, content: bytes) -> None:
        if b'"usage"' not in content and b'"eval_count"' not in content:
            return
        data = _json(content)
        usage = data.get("usage") or {}
        stats = StreamStats(started=ctx.started)
        stats.prompt_tokens = usage.get("prompt_tokens", data.get("prompt_eval_count"))
        stats.completion_tokens = usage.get("completion_tokens", data.get("eval_count"))
        ctx.counts = stats

    def _release(self, ctx: Ctx) -> None:
        if ctx.slot and ctx.key is not None:
            self.slots.release(ctx.key.name)
            ctx.slot = False

    def _record(self, ctx: Ctx, stats: StreamStats | None) -> None:
        stats = stats or ctx.counts or StreamStats(started=ctx.started)
        duration = time.perf_counter() - ctx.started
        status = 499 if stats.cancelled else ctx.status
        route = ctx.route or ctx.path[:100]
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.duration.labels(route).observe(duration)
        if stats.cancelled:
            self.metrics.cancelled.inc()
        if ctx.model:
            if stats.prompt_tokens:
                self.metrics.tokens.labels(ctx.model, "prompt").inc(stats.prompt_tokens)
            if stats.completion_tokens:
                self.metrics.tokens.labels(ctx.model, "completion").inc(stats.completion_tokens)
            if stats.ttft_ms is not None:
                self.metrics.ttft.labels(ctx.model).observe(stats.ttft_ms / 1000)
        self.usage.record(
            UsageRecord(
                ts=time.time(),
                key_name=ctx.key.name if ctx.key else None,
                client_ip=ctx.client_ip,
                method=ctx.method,
                route=route,
                model=ctx.model,
                status=status,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
                ttft_ms=stats.ttft_ms,
                duration_ms=duration * 1000,
                cancelled=stats.cancelled,
                prompt=ctx.prompt,
            )
        )


def _json(content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content)
    except ValueError:
        raise GatewayError(502, "the backend sent invalid JSON") from None
    return data if isinstance(data, dict) else {}


def _pool_openai_embeddings(content: bytes) -> bytes:
    """Mean-pool per-token embeddings (llama-cpp-python without pooling) into one vector per input."""
    data = _json(content)
    changed = False
    for item in data.get("data", []):
        vec = item.get("embedding")
        if isinstance(vec, list) and vec and isinstance(vec[0], list):
            n = len(vec)
            item["embedding"] = [sum(col) / n for col in zip(*vec, strict=True)]
            changed = True
    return json.dumps(data).encode() if changed else content


def _prompt_text(body: dict[str, Any]) -> str | None:
    if isinstance(body.get("prompt"), str):
        return str(body["prompt"])[:10000]
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        return content[:10000] if isinstance(content, str) else None
    return None


def _show(model: str) -> dict[str, Any]:
    """/api/show for a non-Ollama backend, from the catalog where homellm knows the model."""
    from homellm.catalog import load_catalog
    from homellm.errors import NotFoundError

    details: dict[str, Any] = {"format": "gguf", "family": model.split(":")[0]}
    info: dict[str, Any] = {}
    try:
        spec = load_catalog().model(model)
        details |= {"parameter_size": f"{spec.params_total / 1e9:.1f}B", "quantization_level": spec.default_quant}
        a = spec.architecture
        info = {"general.architecture": a.arch, f"{a.arch}.context_length": a.n_ctx_train,
                f"{a.arch}.embedding_length": a.n_embd, f"{a.arch}.block_count": a.n_layer}  # fmt: skip
    except NotFoundError:
        pass
    return {"modelfile": "", "parameters": "", "template": "", "details": details, "model_info": info,
            "capabilities": ["completion", "embedding"]}  # fmt: skip

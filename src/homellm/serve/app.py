"""The gateway as an ASGI app: it composes the stages and handles the lifespan.

Every request meets :mod:`~homellm.serve.checks` in order, then :mod:`~homellm.serve.forward`,
and, whatever happens, :mod:`~homellm.serve.accounting` exactly once (its slot is released in the
same ``finally``). Errors are rendered in the front's own shape: Ollama ``{"error": ...}``, OpenAI
``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from homellm.discovery import Advertiser
from homellm.errors import GatewayError
from homellm.i18n import _, language_from_accept, use_language
from homellm.serve.accounting import Accounting
from homellm.serve.backends import Backend
from homellm.serve.checks import PREFLIGHT, Checks, ClientGone
from homellm.serve.fields import FieldPolicy
from homellm.serve.forward import Forwarder
from homellm.serve.metrics import Metrics
from homellm.serve.policy import Route, front_of, match
from homellm.serve.request import (
    BODY_TIMED_OUT,
    CLIENT_GONE,
    REQUEST_TASK,
    BytesReply,
    Ctx,
    Receive,
    Reply,
    Scope,
    Send,
    error_reply,
    header_map,
    json_reply,
)
from homellm.serve.request import text_reply as text
from homellm.serve.router import Member, PoolOptions, Router
from homellm.serve.tls import TlsFiles
from homellm.settings import Settings
from homellm.store import open_database
from homellm.store.db import database_path
from homellm.store.keys import KeyCache, KeyStore
from homellm.store.pairing import Pairing
from homellm.store.usage import UsageWriter
from homellm.web import is_web_path

log = logging.getLogger("homellm.gateway")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        backend: Backend | Router,
        fingerprint: str | None = None,
        advertiser: Advertiser | None = None,
    ) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.advertiser = advertiser
        # one backend, or a pool of them (serve/router.py); workers that join later make it a pool
        options = PoolOptions.from_settings(settings)
        self.router = backend if isinstance(backend, Router) else Router.of(backend, options)
        self.backend = self.router.members[0].backend  # the only one, or the pool's first
        path = database_path(settings.home)
        self.db = open_database(settings.home)
        self.keys = KeyStore(self.db)
        self.pairing = Pairing(self.db)
        from homellm.serve.pairing import PairSessions

        self.pair_sessions = PairSessions()
        self.key_cache = KeyCache(path)
        self.usage = UsageWriter(path)
        self.metrics = Metrics()
        self.checks = Checks(settings, self.key_cache)
        self.fields = FieldPolicy(llama_extras="openai" in self.router.kinds())
        self.forward = Forwarder(settings, self.router)
        self.accounting = Accounting(self.usage, self.metrics)
        from homellm.serve.quota import Quotas
        from homellm.store.workers import Workers

        self.quotas = Quotas(self.db)
        self.workers = Workers(self.db)
        self._workers_seen: tuple[int, float, int] | None = None
        self.router.use_metrics(self.metrics)
        self.router.watch = self._joined
        from homellm.web import WebApp

        self.web = WebApp(self)  # /app/: the web app, and its session cookies as a way to authenticate
        self.checks.sessions = self.web.sessions

    # ---- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        client = scope.get("client") or ("", 0)
        path = scope["path"]
        ctx = Ctx(front_of(path), scope["method"], path, client[0], header_map(scope))
        accept = ctx.headers.get("accept-language")  # messages in the client's language (the web app sends its
        language = use_language(language_from_accept(accept)) if accept else None  # switch's choice)
        if language is not None:
            language.__enter__()
        scope[REQUEST_TASK] = task = asyncio.current_task()
        self.metrics.active.inc()
        try:
            reply = await self._handle(ctx, receive)
            await reply(scope, receive, send)
        except GatewayError as exc:
            ctx.status = exc.status
            ctx.stats.error = str(exc)
            await error_reply(ctx.front, exc, ctx.cors)(scope, receive, send)
        except asyncio.CancelledError:
            if task is not None:
                task.uncancel()  # the upstream request was closed on the way out
            if scope.get(CLIENT_GONE):
                _client_ended(scope, ctx)
            else:  # the server is shutting down (Ctrl-C, SIGTERM): the request ends with it, quietly
                ctx.stats.cancelled = True
                ctx.stats.error = _("the gateway stopped")
        except ClientGone:
            _client_ended(scope, ctx)
        except Exception as exc:  # a bug must not leak a slot, a traceback or a half answer
            log.error("internal error on %s %s: %s", ctx.method, ctx.label, exc, exc_info=self.settings.debug)
            ctx.status = 500
            if not ctx.response_started:
                err = GatewayError(500, _("internal error in the gateway; the server's log has details"))
                await error_reply(ctx.front, err, ctx.cors)(scope, receive, send)
        finally:
            if language is not None:
                language.__exit__()
            self.metrics.active.dec()
            self.checks.release(ctx)
            if ctx.lease is not None:
                ctx.lease.release()
            ctx.stats.settle()  # what the backend reported, before the quotas and the usage log count it
            if ctx.quota:
                self.quotas.finish(ctx)
            self.accounting.finish(ctx)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.router.start()
                    if self.advertiser is not None:
                        await self.advertiser.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.advertiser is not None:
                    await self.advertiser.stop()
                await self.router.close()
                self.usage.close()
                self.key_cache.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- the request ----------------------------------------------------------------------

    async def _handle(self, ctx: Ctx, receive: Receive) -> Reply:
        checks = self.checks
        checks.network(ctx)
        if is_web_path(ctx.path):
            return await self.web.handle(ctx, receive)
        if ctx.method == "OPTIONS":
            if not ctx.cors:
                raise GatewayError(405, _("OPTIONS is only answered for CORS preflight requests"))
            return BytesReply(b"", 204, headers=ctx.cors | PREFLIGHT)
        route, path_model, other_method = match(ctx.method, ctx.path)
        if route is None:
            if other_method:
                raise GatewayError(405, _("{method} is not allowed on this path").format(method=ctx.method[:10]))
            raise GatewayError(404, _("no such endpoint"))
        ctx.front, ctx.label, ctx.route = route.front, route.label, route
        reply = await self._route(route, ctx, receive, path_model)
        if ctx.cors:
            reply.add_headers(ctx.cors)  # type: ignore[attr-defined]
        return reply

    async def _route(self, route: Route, ctx: Ctx, receive: Receive, path_model: str | None) -> Reply:
        checks = self.checks
        if route.op == "pair":
            from homellm.serve.pairing import MAX_BODY_BYTES

            ctx.raw = await checks.read_body(ctx, receive, MAX_BODY_BYTES)
            return await self._pair(ctx)
        if route.public:
            if route.op == "root" and "text/html" in ctx.headers.get("accept", ""):
                return BytesReply(b"", 303, b"text/plain", {"Location": "/app/"})  # a browser: the web app
            return text("Ollama is running")
        ctx.key = key = checks.authenticate(ctx)
        checks.authorize(ctx, route, key)
        if route.op == "metrics":
            return BytesReply(self.metrics.render(), content_type=b"text/plain; version=0.0.4")
        ctx.raw = await checks.read_body(ctx, receive)
        body: dict[str, Any] = {}
        if route.json_body:
            body = ctx.body = await checks.json_body(ctx)
            self.fields.screen(route.op, body)
        if path_model is not None or route.model_fields:
            checks.models(ctx, route, body, path_model)
            if self.settings.log_prompts:
                ctx.prompt = _prompt_text(body)
        if route.inference:
            await self.forward.check_exists(ctx)
            self.quotas.admit(ctx)
            checks.acquire(ctx)
        return await self.forward.dispatch(route, ctx, receive)

    async def _pair(self, ctx: Ctx) -> Reply:
        """Pairing v2: SPAKE2 keyed by the code, each side confirming the certificate (serve/pairing.py)."""
        from homellm.serve import pairing

        body = pairing.parse_body(ctx.raw)
        join = pairing.JoinContext(self.workers, lambda: self.link_identity().cert.read_text())
        status, answer = pairing.handle(ctx.path, body, ctx.client_ip, self.pairing, self.keys, self.pair_sessions,
                                        self.fingerprint, join)  # fmt: skip
        return json_reply(answer, status)

    # ---- machines that joined (homellm join) ----------------------------------------------

    def link_identity(self) -> TlsFiles:
        """The certificate this gateway presents to its workers (a TLS client certificate, made once)."""
        from homellm.pool.worker_link import main_link_identity

        return main_link_identity(self.settings.home)

    async def _joined(self) -> list[Member] | None:
        """The joined workers as pool members, when they changed since the last look (else None)."""
        from homellm.pool.members import worker_member

        seen = self.workers.version()
        if seen == self._workers_seen:
            return None
        self._workers_seen = seen
        workers = [w for w in self.workers.list() if w.offer != "rpc"]  # a split's worker serves no requests
        if not workers:
            return []
        identity = self.link_identity()
        joined = [worker_member(w, identity, self.settings.idle_timeout_s) for w in workers]
        self.fields = FieldPolicy(llama_extras="openai" in self.router.kinds() | {m.backend.kind for m in joined})
        return joined


def _client_ended(scope: Scope, ctx: Ctx) -> None:
    """The connection ended before the answer: the client left, or the server cut a body that came too late."""
    if scope.get(BODY_TIMED_OUT):  # the server answered 408 and closed the connection
        ctx.status = 408
        ctx.stats.error = _("the request body did not arrive in time")
    else:
        ctx.stats.cancelled = True


def _prompt_text(body: dict[str, Any]) -> str | None:
    if isinstance(body.get("prompt"), str):
        return str(body["prompt"])
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        return content if isinstance(content, str) else None
    return None

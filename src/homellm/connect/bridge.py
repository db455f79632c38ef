"""``homellm bridge``: a local Ollama look-alike on loopback that forwards to the paired server.

Apps that speak Ollama but cannot send an API key (editor plugins, Open WebUI, the ollama CLI)
point at http://127.0.0.1:11434 as if Ollama ran locally. The bridge holds the profile's key, so it
is a trust boundary on this machine: every request passes, in order,

1. the Host guard against DNS rebinding (``browser_guard``, modelled on Ollama's);
2. the request target: an origin-form path only (``/api/chat``), never ``http://host/...``; the query
   string is dropped (no forwarded route takes one);
3. the origin policy, Ollama's own (``browser_guard``): an unlisted origin gets 403;
4. CORS preflights and every ``OPTIONS``: answered here, never forwarded;
5. the route table: only what the gateway serves to a device key (inference, listing, show);
   model management is refused (do it on the server), anything else is unknown (default-deny);
6. the body size;

and only then travels over pinned TLS to the profile's URL (``upstream``) without the browser's
Origin, Referer or cookies. Streams pass through as they come, and a client leaving closes the
upstream request, which stops the generation on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.types import Receive, Scope, Send

from homellm.connect.browser_guard import HostGuard, OriginPolicy
from homellm.connect.profiles import Profile
from homellm.connect.upstream import Upstream, is_origin_form, relay, wait_for_disconnect
from homellm.errors import GatewayError, UsageError
from homellm.i18n import N_, _
from homellm.serve.policy import Front, front_of, match

__all__ = ["FORWARDED_OPS", "Bridge", "ensure_port_free", "run_bridge"]

# The gateway's routes (serve/policy.py) that the bridge forwards: what a device key uses.
FORWARDED_OPS = frozenset({"root", "version", "tags", "ps", "show", "chat", "generate", "embed", "embeddings",
                           "models", "model", "openai_chat", "openai_completion", "openai_embeddings"})  # fmt: skip
MANAGEMENT_REFUSED = N_(
    "homellm bridge: model management ({path}) is not forwarded; pull, create, copy or delete models on the "
    "server itself (for example `ollama pull MODEL` there)"
)
DEFAULT_MAX_BODY = 16 * 1024 * 1024
_SHOWN = 120  # characters of an untrusted value quoted in an error


def _single(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope["headers"] if k.lower() == name]
    if len(values) > 1:
        raise GatewayError(400, _("more than one {header} header").format(header=name.decode()))
    return values[0].decode("latin-1") if values else None


def _json_error(front: Front, exc: GatewayError) -> bytes:
    if front == "openai":
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return json.dumps({"error": {"message": str(exc), "type": kind, "code": exc.code}}).encode()
    return json.dumps({"error": str(exc)}).encode()


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
    raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
    if body:
        raw.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Bridge:
    """The ASGI app ``homellm bridge`` serves."""

    def __init__(
        self,
        profile: Profile,
        hosts: HostGuard | None = None,
        origins: OriginPolicy | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.profile = profile
        self.hosts = hosts or HostGuard()
        self.origins = origins or OriginPolicy()
        self.max_body_bytes = max_body_bytes
        self.upstream = Upstream(profile)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        front = front_of(scope["path"])
        cors: list[tuple[str, str]] = []
        try:
            cors = self._guard(scope)
            if scope["method"] == "OPTIONS":  # preflights (and any OPTIONS) end here
                await _send(send, 204, b"", cors)
                return
            self._route(scope["method"], scope["path"])
            body = await self._body(scope, receive)
        except GatewayError as exc:
            await _send(send, exc.status, _json_error(front, exc), [*cors, *exc.headers.items()])
            return
        if body is None:
            return  # the client left while sending
        await self._forward(scope, receive, send, body, cors, front)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _guard(self, scope: Scope) -> list[tuple[str, str]]:
        """Host, target form and origin; the CORS headers the answer carries."""
        host = _single(scope, b"host")
        if not self.hosts.allows(host):
            raise GatewayError(403, _(
                "homellm bridge: Host {host!r} is not a loopback name of this machine (DNS rebinding guard); if you "
                "reach the bridge by another name on purpose, add it with --allowed-hosts"
            ).format(host=(host or "")[:_SHOWN]))  # fmt: skip
        if not is_origin_form(scope["path"]):
            raise GatewayError(400, _(
                "homellm bridge: the request target must be a path such as /api/chat, not {target!r}"
            ).format(target=scope["path"][:_SHOWN]))  # fmt: skip
        origin = _single(scope, b"origin")
        if origin is None or not OriginPolicy.is_cross_origin(origin, host):
            return []
        if not self.origins.allows(origin):
            raise GatewayError(403, _(
                "homellm bridge: origin {origin!r} may not use this bridge; allow it with --origins or OLLAMA_ORIGINS"
            ).format(origin=origin[:_SHOWN]))  # fmt: skip
        if scope["method"] == "OPTIONS":
            return self.origins.preflight_headers(origin)
        return self.origins.response_headers(origin)

    @staticmethod
    def _route(method: str, path: str) -> None:
        route, _model, other_method = match(method, path)
        shown = path[:_SHOWN]
        if route is not None and route.op in ("manage", "blob"):
            raise GatewayError(403, _(MANAGEMENT_REFUSED).format(path=shown), code="management_not_forwarded")
        if route is None and other_method:
            raise GatewayError(405, _("{method} is not allowed on {path}").format(method=method, path=shown))
        if route is None or route.op not in FORWARDED_OPS:
            raise GatewayError(404, _("homellm bridge: no such endpoint: {method} {path}").format(
                method=method, path=shown))  # fmt: skip

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request body, at most ``max_body_bytes``; None when the client left."""
        too_big = GatewayError(413, _("homellm bridge: the request body is larger than {size} bytes").format(
            size=self.max_body_bytes))  # fmt: skip
        declared = _single(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, cors: list[tuple[str, str]], front: Front
    ) -> None:
        async def exchange() -> None:
            try:
                response = await self.upstream.open(scope["method"], scope["path"], scope["headers"], body)
            except GatewayError as exc:
                await _send(send, exc.status, _json_error(front, exc), cors)
                return
            await relay(response, send, cors)

        answer = asyncio.ensure_future(exchange())
        gone = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            answer.cancel()  # when the client left first: closes the upstream request, the server stops
            with contextlib.suppress(asyncio.CancelledError):
                await gone
            with contextlib.suppress(asyncio.CancelledError):
                await answer


def ensure_port_free(port: int) -> None:
    from homellm.serve.network import port_taken

    if port_taken("127.0.0.1", port):
        raise UsageError(_(
                "port {port} is in use on this machine (a local Ollama?); run the bridge on another port, e.g. "
                "--port {other}, and set OLLAMA_HOST=127.0.0.1:{other}"
            ).format(port=port, other=port + 66))  # fmt: skip


def run_bridge(bridge: Bridge, port: int) -> None:
    import uvicorn

    ensure_port_free(port)
    uvicorn.run(bridge, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False, timeout_graceful_shutdown=3)  # fmt: skip

"""The gateway's checks, in the order every request meets them.

client IP allowlist -> well-formed headers -> Host (DNS rebinding) -> CORS origin -> route table
(default-deny) -> API key -> admin scope -> rate limit -> body size -> JSON read like the backend
reads it -> fields allowed for this backend -> every model the body names, against the key's
allowlist -> the model exists -> a concurrency slot. Only then does a request reach a backend.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError
from homellm.i18n import _
from homellm.serve.auth import presented_key
from homellm.serve.body import read_object
from homellm.serve.limits import ConcurrencyLimiter, RateLimiter, retry_after
from homellm.serve.network import allowed_host_names, host_of, ip_allowed, parse_networks
from homellm.serve.policy import Route
from homellm.serve.request import MAX_MODEL_NAME, Ctx, Receive, same_origin
from homellm.settings import Settings
from homellm.store.keys import ApiKey, KeyCache

if TYPE_CHECKING:
    from homellm.web.sessions import SessionAuth

# headers the gateway reads: a value outside printable ASCII is refused, not guessed at
READ_HEADERS = (
    "host",
    "origin",
    "authorization",
    "x-api-key",
    "content-type",
    "content-length",
    "accept-language",
    "cookie",
    "x-csrf-token",
)
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Api-Key",
    "Access-Control-Max-Age": "600",
}


def _printable(value: str) -> bool:
    return value.isascii() and value.isprintable()


class Checks:
    def __init__(self, settings: Settings, keys: KeyCache) -> None:
        self.settings = settings
        self.keys = keys
        networks = parse_networks(settings.allow_cidrs)
        self.networks = networks
        # a household has a handful of client addresses: each is checked against the allowlist once
        self.ip_allowed = functools.lru_cache(maxsize=4096)(lambda ip: ip_allowed(ip, networks))
        self.hosts = allowed_host_names(settings.host, settings.allowed_hosts)
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.cors_origins)
        self.rate = RateLimiter(settings.requests_per_minute)
        self.slots = ConcurrencyLimiter(settings.max_streams_per_key)
        self.sessions: SessionAuth | None = None  # the web app's session cookies (set by the gateway)
        self.running: dict[int, Ctx] = {}  # requests holding a slot now (the household page lists them)

    # ---- before the route ---------------------------------------------------------------

    def network(self, ctx: Ctx) -> None:
        """IP allowlist, headers, Host guard and origin; sets the CORS headers of an allowed origin."""
        if not self.ip_allowed(ctx.client_ip):
            raise GatewayError(403, _("your address {ip} is not in this server's allowlist").format(ip=ctx.client_ip))
        for name in READ_HEADERS:
            value = ctx.headers.get(name)
            if value is not None and not _printable(value):
                raise GatewayError(400, _("the {name} header is malformed").format(name=name))
        host = host_of(ctx.headers.get("host", ""))
        if host not in self.hosts:
            raise GatewayError(
                403, _("Host {host!r} is not a name of this server (DNS rebinding guard)").format(host=host[:100])
            )
        origin = ctx.headers.get("origin")
        if origin and not same_origin(origin, ctx.headers.get("host", "")):  # the web app's own pages pass
            if origin.rstrip("/").lower() not in self.origins:
                raise GatewayError(
                    403, _("origin {origin} is not allowed; add it to cors_origins").format(origin=origin[:100])
                )
            ctx.cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    # ---- who is asking ------------------------------------------------------------------

    def authenticate(self, ctx: Ctx) -> ApiKey:
        presented = presented_key(ctx.headers)
        if presented is None and self.sessions is not None and "cookie" in ctx.headers:
            session_key = self.sessions.authenticate(ctx)  # a signed-in browser (CSRF and origin checked)
            if session_key is not None:
                return session_key
        if presented is None:
            raise GatewayError(401, _("an API key is required: send 'Authorization: Bearer <key>'"))
        key = self.keys.verify(presented)
        if key is None:
            raise GatewayError(401, _("the API key is invalid, revoked or expired"))
        return key

    def authorize(self, ctx: Ctx, route: Route, key: ApiKey) -> None:
        if route.admin and not key.admin:
            raise GatewayError(403, _("{path} needs an admin key").format(path=route.label))
        wait = self.rate.check(key.name)
        if wait:
            raise GatewayError(
                429,
                _("rate limit of {n} requests per minute reached").format(n=self.settings.requests_per_minute),
                headers={"Retry-After": retry_after(wait)},
            )

    # ---- the body -----------------------------------------------------------------------

    async def read_body(self, ctx: Ctx, receive: Receive, limit: int | None = None) -> bytes:
        """The whole body, refused beyond ``limit`` (default: the setting; the server's protocol bounds how
        long it may take). Routes that take small bodies without a key pass their own, so that a stranger
        cannot make the gateway hold the largest body once per connection."""
        limit = self.settings.max_body_bytes if limit is None else min(limit, self.settings.max_body_bytes)
        declared = ctx.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise GatewayError(400, _("the Content-Length header is malformed"))
            if int(declared) > limit:
                raise GatewayError(413, _("the request body is larger than {n} bytes").format(n=limit))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, _("the request body is larger than {n} bytes").format(n=limit))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def json_body(self, ctx: Ctx) -> dict[str, Any]:
        return await read_object(ctx.raw)

    def models(self, ctx: Ctx, route: Route, body: dict[str, Any], path_model: str | None) -> None:
        """Every model the request names must be a well-formed name in the key's allowlist."""
        assert ctx.key is not None
        names = [path_model] if path_model is not None else []
        for f in route.model_fields:
            if f in body:
                names.append(body[f])
        if route.op == "show" and "model" in body and "name" in body and body["model"] != body["name"]:
            raise GatewayError(400, _('send "model" or "name", not both'))
        if route.model_fields and not names:
            raise GatewayError(
                400, _('the request needs a "{field}" field naming a model').format(field=route.model_fields[0])
            )
        for name in names:
            model = valid_model_name(name)
            if not ctx.key.may_use(model):
                raise GatewayError(
                    403, _("key {key!r} may not use model {model!r}").format(key=ctx.key.name, model=model)
                )
        if names:
            ctx.model = valid_model_name(names[0])

    def acquire(self, ctx: Ctx) -> None:
        assert ctx.key is not None
        if not self.slots.acquire(ctx.key.name):
            raise GatewayError(
                429,
                _("{n} requests are already running for key {key!r}").format(
                    n=self.settings.max_streams_per_key, key=ctx.key.name
                ),
                headers={"Retry-After": "1"},
            )
        ctx.slot = True
        self.running[id(ctx)] = ctx

    def release(self, ctx: Ctx) -> None:
        if ctx.slot and ctx.key is not None:
            self.slots.release(ctx.key.name)
            ctx.slot = False
            self.running.pop(id(ctx), None)


class ClientGone(Exception):
    """The client disconnected before its request was complete."""


def valid_model_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GatewayError(400, _("a model name must be a non-empty string"))
    if len(value) > MAX_MODEL_NAME or not value.isprintable():
        raise GatewayError(400, _("a model name is at most {n} printable characters").format(n=MAX_MODEL_NAME))
    return value

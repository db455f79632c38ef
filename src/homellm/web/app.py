"""``/app/``: the web app's pages, files and JSON endpoints, behind the gateway's network checks.

The gateway hands every ``/app`` request here after its IP allowlist, header, Host and origin checks.
Pages and files are public (they hold no data); ``/app/household`` is served to admin sessions only.
The JSON endpoints under ``/app/api/`` authenticate like every API request (a key, or the session
cookie with its CSRF token), count against the key's rate limit, and refuse admin work to other keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError, NotFoundError, UsageError
from homellm.i18n import _, current_language
from homellm.serve.limits import RateLimiter, retry_after
from homellm.serve.network import host_of
from homellm.serve.policy import Route
from homellm.serve.request import BytesReply, Ctx, Receive, Reply, json_reply, same_origin, text_reply
from homellm.store.keys import ApiKey
from homellm.store.pairing import source_of
from homellm.store.sessions import SessionStore
from homellm.web.assets import SECURITY_HEADERS, Asset, load_assets
from homellm.web.sessions import SessionAuth, clear_cookie, set_cookie

if TYPE_CHECKING:
    from homellm.serve.app import Gateway

PREFIX = "/app"
API = "/app/api/"
MAX_WEB_BODY = 16 * 1024
SIGN_INS_PER_MINUTE = 20  # per source address: keys and pairing codes typed into the page
NO_STORE = {"Cache-Control": "no-store"}
# the pages' routes as the usage log and the admin check see them
PAGE = Route("web", "ollama", "/app")
USER = Route("web_api", "ollama", "/app/api")
ADMIN = Route("web_admin", "ollama", "/app/api/admin", admin=True)

Handler = Callable[[Ctx, dict[str, Any]], Awaitable[Reply]]


def is_web_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _redirect(location: str) -> BytesReply:
    return BytesReply(b"", 303, b"text/plain", {"Location": location, **SECURITY_HEADERS})


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> BytesReply:
    return json_reply(data, status, {**NO_STORE, **(headers or {})})


def _string(body: dict[str, Any], name: str, limit: int = 512) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise GatewayError(400, _('"{field}" must be a non-empty string').format(field=name))
    return value.strip()


def _models(body: dict[str, Any]) -> list[str] | None:
    value = body.get("models")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) and 0 < len(m) <= 256 for m in value):
        raise GatewayError(400, _('"models" must be a list of model names, or null for every model'))
    return [m.strip() for m in value if m.strip()]


def _within(key: ApiKey | None, models: list[str] | None) -> None:
    """An admin key limited to some models hands out (keys, pairing codes) no model it may not use itself,
    and revokes no key that may use more than it may."""
    assert key is not None
    if key.models is None:
        return
    beyond = _("every model") if models is None else next((m for m in models if not key.may_use(m)), None)
    if beyond is not None:
        raise GatewayError(403, _("key {key!r} may not use model {model!r}").format(key=key.name, model=beyond))


class WebApp:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.assets = load_assets()
        self.store = SessionStore(gateway.db)
        self.sessions = SessionAuth(self.store, gateway.key_cache)
        self.sign_ins = RateLimiter(SIGN_INS_PER_MINUTE)
        self.api: dict[tuple[str, str], tuple[Route | None, Handler]] = {
            ("GET", "i18n"): (None, self.i18n),
            ("GET", "info"): (None, self.info),
            ("POST", "session"): (None, self.sign_in),
            ("POST", "pair"): (None, self.pair),
            ("GET", "me"): (USER, self.me),
            ("POST", "logout"): (USER, self.logout),
            ("GET", "admin/keys"): (ADMIN, self.keys),
            ("POST", "admin/keys"): (ADMIN, self.create_key),
            ("POST", "admin/keys/revoke"): (ADMIN, self.revoke_key),
            ("POST", "admin/codes"): (ADMIN, self.open_code),
            ("POST", "admin/codes/withdraw"): (ADMIN, self.withdraw_code),
            ("GET", "admin/server"): (ADMIN, self.server),
        }

    # ---- pages and files --------------------------------------------------------------------

    async def handle(self, ctx: Ctx, receive: Receive) -> Reply:
        ctx.label = PAGE.label
        if ctx.path.startswith(API):
            return await self._api(ctx, receive, ctx.path[len(API) :])
        if ctx.method not in ("GET", "HEAD"):
            raise GatewayError(405, _("{method} is not allowed on this path").format(method=ctx.method[:10]))
        if ctx.path == PREFIX:
            return _redirect(PREFIX + "/")
        name = ctx.path[len(PREFIX) + 1 :]
        if name == "":
            return self._file(ctx, "index.html")
        if name == "household":
            return self._household_page(ctx)
        if name == "manifest.webmanifest" or (name.startswith("static/") and not name.endswith(".html")):
            return self._file(ctx, name.removeprefix("static/") if name.startswith("static/") else name)
        raise GatewayError(404, _("no such page"))

    def _file(self, ctx: Ctx, name: str) -> Reply:
        asset: Asset | None = self.assets.get(name)
        if asset is None:
            raise GatewayError(404, _("no such page"))
        headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
        if ctx.headers.get("if-none-match") == asset.etag:
            return BytesReply(b"", 304, asset.content_type.encode(), headers)
        return BytesReply(asset.body, 200, asset.content_type.encode(), headers)

    def _household_page(self, ctx: Ctx) -> Reply:
        """Admin sessions only: a browser that is not signed in goes to the sign-in page."""
        try:
            key = self.gw.checks.authenticate(ctx)
        except GatewayError as exc:
            if exc.status == 401:
                return _redirect(PREFIX + "/")
            raise
        if not key.admin:
            return text_reply(_("The household page is for admin keys only."), 403, SECURITY_HEADERS)
        return self._file(ctx, "household.html")

    # ---- the JSON endpoints -----------------------------------------------------------------

    async def _api(self, ctx: Ctx, receive: Receive, name: str) -> Reply:
        days = None
        if ctx.method == "GET" and name.startswith("admin/usage/") and name[12:].isdigit() and len(name) < 20:
            name, days = "admin/usage", int(name[12:])
        if name == "admin/usage" and ctx.method == "GET":
            route: Route | None = ADMIN
            handler: Handler = lambda c, b: self.usage(c, days or 30)  # noqa: E731
        else:
            found = self.api.get((ctx.method, name))
            if found is None:
                if any(n == name for (_m, n) in self.api):
                    raise GatewayError(405, _("{method} is not allowed on this path").format(method=ctx.method[:10]))
                raise GatewayError(404, _("no such endpoint"))
            route, handler = found
        ctx.label = (route or USER).label
        if route is not None:
            ctx.key = key = self.gw.checks.authenticate(ctx)
            self.gw.checks.authorize(ctx, route, key)
        body: dict[str, Any] = {}
        if ctx.method == "POST":
            body = await self._body(ctx, receive)
        try:
            return await handler(ctx, body)
        except NotFoundError as exc:
            raise GatewayError(404, str(exc)) from None
        except UsageError as exc:
            raise GatewayError(400, str(exc)) from None

    async def _body(self, ctx: Ctx, receive: Receive) -> dict[str, Any]:
        """A small JSON object, sent as JSON from this origin (another origin would need a preflight)."""
        origin = ctx.headers.get("origin")
        if origin and not same_origin(origin, ctx.headers.get("host", "")):
            raise GatewayError(403, _("a signed-in browser may only call this server from its own pages"))
        if not ctx.headers.get("content-type", "").lower().startswith("application/json"):
            raise GatewayError(415, _("send the body as application/json"))
        from homellm.serve.body import parse_object

        return parse_object(await self.gw.checks.read_body(ctx, receive, MAX_WEB_BODY))

    def _signed_in(self, key: ApiKey) -> Reply:
        token, _session = self.store.create(key.name)
        return _json({"name": key.name, "admin": key.admin}, 200, {"Set-Cookie": set_cookie(token)})

    def _throttle(self, ctx: Ctx) -> None:
        wait = self.sign_ins.check(source_of(ctx.client_ip))
        if wait:
            raise GatewayError(429, _("too many sign-in attempts from your address; wait a minute"),
                               headers={"Retry-After": retry_after(wait)})  # fmt: skip

    async def i18n(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        """The page's words in the request's language (``Accept-Language``, which the page sets from its switch)."""
        from homellm.web.messages import catalog

        return _json({"lang": current_language(), "messages": catalog()})

    async def info(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        return _json({"fingerprint": self.gw.fingerprint, "tls": self.gw.fingerprint is not None})

    async def sign_in(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        """``{"key"}``: a key pasted into the page becomes a session of that key."""
        self._throttle(ctx)
        key = self.gw.key_cache.verify(_string(body, "key"))
        if key is None:
            raise GatewayError(401, _("the API key is invalid, revoked or expired"))
        return self._signed_in(key)

    async def pair(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        """``{"code", "device"}``: a pairing code becomes a device key of its own and a session of it."""
        from homellm.web.pairing import redeem

        self._throttle(ctx)
        key = redeem(body, ctx.client_ip, self.gw.pairing, self.gw.keys, self.gw.pair_sessions.starts)
        self.gw.key_cache.refresh(force=True)
        return self._signed_in(key)

    async def me(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        key = ctx.key
        assert key is not None
        current = self.sessions.session(ctx)
        return _json({
            "name": key.name, "admin": key.admin, "models": list(key.models) if key.models is not None else None,
            "expires_at": key.expires_at, "csrf": current[1].csrf if current else None,
        })  # fmt: skip

    async def logout(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        current = self.sessions.session(ctx)
        if current is not None:
            self.store.delete(current[0])
        return _json({"signed_out": True}, 200, {"Set-Cookie": clear_cookie()})

    # ---- the household (admin keys) ---------------------------------------------------------

    def _link(self, ctx: Ctx, **fragment: str | None) -> dict[str, str]:
        from homellm.web.links import app_url, lan_host, qr_svg_data_uri

        scheme = "https" if self.gw.fingerprint else "http"
        host = lan_host(host_of(ctx.headers.get("host", "")))
        url = app_url(scheme, host, self.gw.settings.port, **fragment, fp=self.gw.fingerprint)
        return {"url": url, "qr": qr_svg_data_uri(url)}

    async def keys(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        from homellm.web.household import keys_and_codes

        return _json(keys_and_codes(self.gw))

    async def create_key(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        """``{"name", "models", "admin", "expires"}`` -> the key, its secret (this once) and a QR code for a phone."""
        from homellm.store.keys import parse_duration
        from homellm.web.household import key_data

        admin, expires = body.get("admin", False), body.get("expires")
        if not isinstance(admin, bool):
            raise GatewayError(400, _('"admin" must be true or false'))
        if expires is not None and not isinstance(expires, str):
            raise GatewayError(400, _('"expires" must be a duration like 30d, or null'))
        lifetime = parse_duration(expires) if expires else None
        models = _models(body)
        _within(ctx.key, models)
        key, secret = self.gw.keys.create(_string(body, "name", 64), models, admin, lifetime)
        import time

        return _json({"key": key_data(key, time.time()), "secret": secret, **self._link(ctx, key=secret)})

    async def revoke_key(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        """Revoke a key and end its sessions now (not after the key cache's next look)."""
        import time

        from homellm.web.household import key_data

        name = _string(body, "name", 64)
        target = self.gw.keys.get(name)
        _within(ctx.key, list(target.models) if target.models is not None else None)  # no wider key than its own
        key = self.gw.keys.revoke(name)
        ended = self.store.delete_for_key(key.name)
        self.gw.key_cache.refresh(force=True)
        return _json({"key": key_data(key, time.time()), "sessions_ended": ended})

    async def open_code(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        """``{"models"}`` -> a one-time pairing code (5 minutes) and its link as a QR code."""
        models = _models(body)
        _within(ctx.key, models)
        code = self.gw.pairing.new_code(models)
        return _json({"id": code.id, "code": str(code.code), "expires_at": code.expires_at,
                      **self._link(ctx, pair=str(code.code))})  # fmt: skip

    async def withdraw_code(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        code_id = body.get("id")
        if not isinstance(code_id, int) or isinstance(code_id, bool):
            raise GatewayError(400, _('"id" must be the number of an open code'))
        return _json({"withdrawn": self.gw.pairing.withdraw(code_id)})

    async def usage(self, ctx: Ctx, days: int) -> Reply:
        from homellm.web.household import usage

        return _json(usage(self.gw, days))

    async def server(self, ctx: Ctx, body: dict[str, Any]) -> Reply:
        from homellm.web.household import server

        assert ctx.key is not None
        return _json(await server(self.gw, ctx.key))

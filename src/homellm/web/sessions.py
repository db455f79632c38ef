"""A browser's credential: the session cookie, checked like a key, and the CSRF token that must come with it.

The cookie is ``HttpOnly`` (no script reads it), ``Secure`` (never sent over plain HTTP; browsers treat
``localhost`` as secure), ``SameSite=Strict`` (never sent by another site's page) and ``Path=/`` (the
chat goes to ``/api/chat``). Every request that is not a GET or HEAD must also carry the session's CSRF
token in ``X-CSRF-Token``; a page from another origin can neither read that token nor set the header
without a preflight the gateway refuses. A cookie-authenticated request whose ``Origin`` is not the
gateway's own is refused as well.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie

from homellm.errors import GatewayError
from homellm.i18n import _
from homellm.serve.request import Ctx, same_origin
from homellm.store.keys import ApiKey, KeyCache
from homellm.store.sessions import SESSION_TTL, SessionStore, WebSession

COOKIE = "homellm_session"
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_COOKIE_HEADER = 8192


def cookie_value(header: str, name: str = COOKIE) -> str | None:
    """One cookie's value from a ``Cookie`` header (None when absent or the header is malformed)."""
    if not header or len(header) > MAX_COOKIE_HEADER:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def set_cookie(token: str) -> str:
    return f"{COOKIE}={token}; Path=/; Max-Age={int(SESSION_TTL)}; HttpOnly; Secure; SameSite=Strict"


def clear_cookie() -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"


class SessionAuth:
    """Checks a request's session cookie; the gateway's ``Checks.authenticate`` calls it when no key is sent."""

    def __init__(self, store: SessionStore, keys: KeyCache) -> None:
        self.store = store
        self.keys = keys

    def session(self, ctx: Ctx) -> tuple[str, WebSession] | None:
        """(token, session) of the request's cookie, or None when it has none that is open."""
        token = cookie_value(ctx.headers.get("cookie", ""))
        if token is None:
            return None
        session = self.store.get(token)
        return (token, session) if session is not None else None

    def authenticate(self, ctx: Ctx) -> ApiKey | None:
        """The key behind the request's session; None when there is no session cookie at all."""
        token = cookie_value(ctx.headers.get("cookie", ""))
        if token is None:
            return None
        session = self.store.get(token)
        if session is None:
            raise GatewayError(401, _("your sign-in has ended; sign in again"))
        key = self.keys.get(session.key_name)
        if key is None or not key.active():
            raise GatewayError(401, _("the key of this sign-in was revoked or has expired; sign in again"))
        origin = ctx.headers.get("origin")
        if origin and not same_origin(origin, ctx.headers.get("host", "")):
            raise GatewayError(403, _("a signed-in browser may only call this server from its own pages"))
        if ctx.method not in SAFE_METHODS and not hmac.compare_digest(
            ctx.headers.get("x-csrf-token", "").encode(), session.csrf.encode()
        ):
            raise GatewayError(403, _("the request has no valid CSRF token; reload the page"))
        return key

"""The paired server as the bridge reaches it, and the streaming relay back to the local client.

The upstream URL is fixed by the profile: only an origin-form path (``/api/chat``) is ever set on
the profile's base URL, whatever the request line said (an absolute-form target such as
``GET http://elsewhere/ HTTP/1.1`` is refused before this module sees it). Every connection is
TLS pinned twice: the pinned certificate is the only trust anchor (``pinned_context``), and the
certificate presented must have exactly the pinned SHA-256 (aiohttp's ``Fingerprint``, checked on
every new connection before a byte of the request, and so the key, is sent). Only headers a page
may send to Ollama travel on, and the key is the profile's; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable

import aiohttp
import yarl
from starlette.types import Receive, Send

from homellm.connect.browser_guard import ALLOWED_HEADERS
from homellm.connect.profiles import Profile, fetch_certificate, pinned_context
from homellm.errors import GatewayError, HomeLLMError, UsageError
from homellm.i18n import _
from homellm.serve.tls import fingerprint_of_pem, format_fingerprint

__all__ = ["Upstream", "is_origin_form", "wait_for_disconnect"]

log = logging.getLogger("homellm.bridge")

# What travels to the server: the headers Ollama lets a page send, less Authorization (the bridge sends
# the profile's key instead), plus Accept-Language (the server answers errors in the user's language).
# Never Origin, Referer, Cookie, Host, X-Forwarded-*, Forwarded or any proxy header.
FORWARDED_REQUEST_HEADERS = frozenset(h.lower() for h in (*ALLOWED_HEADERS, "Accept-Language")) - {"authorization"}
# What comes back: what a client of Ollama reads. Never Set-Cookie, CORS headers (the bridge sets its
# own), HSTS, hop-by-hop headers or a length the relay does not keep.
RETURNED_RESPONSE_HEADERS = frozenset({"content-type", "cache-control", "retry-after", "x-request-id"})
CONNECT_TIMEOUT_S = 10.0


def is_origin_form(path: str) -> bool:
    """``/a/b``: a path only, no scheme or authority (``http://h/``, ``//h/``), no dot segments."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has gone (the request body must have been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Upstream:
    """One aiohttp session to the profile's server: base URL, pinned TLS, the key."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.base = yarl.URL(profile.url).with_path("/").with_query(None).with_fragment(None)
        if self.base.scheme != "https" or not self.base.host:
            raise UsageError(_("the bridge forwards over TLS only; {url} is not an https:// URL. Run homellm "
                               "connect again with the server's https address").format(url=profile.url))  # fmt: skip
        hexdigest = profile.fingerprint.upper().removeprefix("SHA256:").replace(":", "")
        try:
            self.digest = bytes.fromhex(hexdigest)
        except ValueError:
            self.digest = b""
        if len(self.digest) != 32:
            raise UsageError(_("the saved fingerprint of {name} is damaged; run homellm connect again").format(
                name=profile.name))  # fmt: skip
        self.context = pinned_context(profile.cert_pem)
        self._session: aiohttp.ClientSession | None = None

    def url_for(self, path: str) -> yarl.URL:
        """The profile's URL with this path (decoded, re-encoded by yarl). No query string: no route the
        bridge forwards takes one, and none can smuggle anything in."""
        if not is_origin_form(path):
            raise GatewayError(400, _("only a path like /api/chat can be forwarded"))
        return self.base.with_path(path)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=aiohttp.Fingerprint(self.digest)),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent"),  # identity bytes; only the client's UA
                trust_env=False,  # no proxy from the environment: the key goes to the pinned server only
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
        kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw if k.lower().decode("latin-1") in
                FORWARDED_REQUEST_HEADERS]  # fmt: skip
        return [*kept, ("Authorization", f"Bearer {self.profile.key}")]

    async def open(
        self, method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> aiohttp.ClientResponse:
        """Send the request; the response's headers have arrived. Refusals are GatewayErrors."""
        url = self.url_for(path)
        try:
            # ssl= here is the trust anchor; the connector's Fingerprint is checked as well (aiohttp uses the
            # request's context and falls back to the connector for the fingerprint)
            return await self._session_now().request(method, url, data=body or None,
                                                     headers=self._headers(raw_headers), ssl=self.context,
                                                     allow_redirects=False, proxy=None)  # fmt: skip
        except aiohttp.ServerFingerprintMismatch as exc:
            raise self._pin_refused(format_fingerprint(exc.got.hex())) from None
        except aiohttp.ClientConnectorCertificateError:
            raise self._pin_refused(await asyncio.to_thread(self._presented)) from None
        except aiohttp.ClientSSLError as exc:
            raise GatewayError(502, _("homellm bridge: TLS with {url} failed ({error})").format(
                url=self.profile.url, error=exc)) from None  # fmt: skip
        except TimeoutError:
            raise GatewayError(504, _("homellm bridge: the server {url} did not answer within {seconds:g}s").format(
                url=self.profile.url, seconds=CONNECT_TIMEOUT_S)) from None  # fmt: skip
        except (aiohttp.ClientError, OSError) as exc:
            raise GatewayError(502, _("homellm bridge: the server {url} is not reachable ({error}); check it with "
                                      "`homellm ping`").format(url=self.profile.url, error=exc)) from None  # fmt: skip

    def _presented(self) -> str:
        """The fingerprint of the certificate the server presents now (for the message only)."""
        host, port = self.profile.host_port
        try:
            return fingerprint_of_pem(fetch_certificate(host, port).encode())
        except HomeLLMError:
            return _("(none could be read)")

    def _pin_refused(self, seen: str) -> GatewayError:
        message = _(
            "homellm bridge: {url} presents the certificate {seen}, not the pinned {pinned}; nothing was sent. If "
            "the server's certificate was replaced on purpose, compare fingerprints and run `homellm connect` again"
        ).format(url=self.profile.url, seen=seen, pinned=self.profile.fingerprint)
        log.error("%s", message)
        return GatewayError(502, message, code="certificate_mismatch")


def response_headers(response: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
            if k.lower() in RETURNED_RESPONSE_HEADERS]  # fmt: skip


async def relay(response: aiohttp.ClientResponse, send: Send, extra: list[tuple[str, str]]) -> None:
    """Pass the answer on as it comes; closes the upstream connection unless the answer ended cleanly.

    Run it where a client leaving cancels it (see ``Bridge``): cancellation closes the connection, and
    the server then stops generating.
    """
    done = False
    try:
        headers = response_headers(response) + [(k.lower().encode(), v.encode("latin-1")) for k, v in extra]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            tail = _stream_error(response.headers.get("content-type", ""), str(exc))
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        else:
            done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        if done:
            response.release()
        else:
            response.close()


def _stream_error(content_type: str, error: str) -> bytes:
    """The error as the stream's own last item: an NDJSON line (as Ollama does) or an SSE event."""
    message = _("homellm bridge: the server's answer broke off ({error})").format(error=error)
    if "ndjson" in content_type:
        return json.dumps({"error": message}).encode() + b"\n"
    if "event-stream" in content_type:
        return b"data: " + json.dumps({"error": {"message": message, "type": "server_error"}}).encode() + b"\n\n"
    return b""

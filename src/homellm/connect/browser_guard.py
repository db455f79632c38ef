"""What a web page may do with the bridge: Ollama's Host guard and Ollama's origin (CORS) policy.

The bridge answers on loopback as Ollama does, so every web page the user opens can send it
requests. Two checks, modelled on Ollama's own (``server/routes.go`` and ``envconfig.AllowedOrigins``
with gin-contrib/cors configured as Ollama configures it), stand between a page and the server:

- **Host** (DNS rebinding): a page on an attacker's name that later resolves to 127.0.0.1 reaches the
  bridge with that name in ``Host``. Only loopback names (``localhost``, ``*.localhost``) and loopback or
  unspecified addresses pass, plus ``--allowed-hosts``. Ollama also lets its machine's host name,
  ``*.local``, ``*.internal`` and private addresses through; the bridge listens on loopback only and
  those names are answered by DNS or mDNS, which someone else on the network can answer, so it does not.
- **Origin**: a cross-origin request passes only from a listed origin: Ollama's defaults
  (``localhost``, ``127.0.0.1`` and ``0.0.0.0``, any port, http and https; ``app://``, ``file://``,
  ``tauri://``, ``vscode-webview://``, ``vscode-file://``), then ``OLLAMA_ORIGINS`` and ``--origins``.
  Matching is gin-contrib/cors's: exact (lower-cased list) or one ``*`` as a prefix/suffix wildcard;
  ``*`` alone allows every origin. A refused origin gets 403 before anything is forwarded, so even a
  "simple" request (a form POST, no preflight) never reaches the server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from homellm.errors import UsageError
from homellm.i18n import _
from homellm.serve.network import host_of

__all__ = ["ALLOWED_HEADERS", "HostGuard", "OriginPolicy", "split_list"]

# Ollama's corsConfig.AllowHeaders, as gin-contrib/cors sends them (http.CanonicalHeaderKey).
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "Openai-Beta",
    "X-Stainless-Arch", "X-Stainless-Async", "X-Stainless-Custom-Poll-Interval", "X-Stainless-Helper-Method",
    "X-Stainless-Lang", "X-Stainless-Os", "X-Stainless-Package-Version", "X-Stainless-Poll-Helper",
    "X-Stainless-Retry-Count", "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Timeout",
)  # fmt: skip
# cors.DefaultConfig(): AllowMethods and MaxAge (12 h), which Ollama keeps.
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_AGE_S = 12 * 3600
# What cors.Config.Validate accepts without a '*': DefaultSchemas + ExtensionSchemas (AllowBrowserExtensions).
_SCHEMES = ("http://", "https://", "chrome-extension://", "safari-extension://", "moz-extension://",
            "ms-browser-extension://")  # fmt: skip
_MAX_HOST = 255


def _default_origins() -> list[str]:
    """envconfig.AllowedOrigins() without OLLAMA_ORIGINS, in Ollama's order."""
    found = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        found += [f"http://{host}", f"https://{host}", f"http://{host}:*", f"https://{host}:*"]
    return [*found, "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]


def split_list(text: str | None) -> list[str]:
    """A comma-separated setting (``OLLAMA_ORIGINS``, ``--origins``, ``--allowed-hosts``) as a list: outer
    spaces and quotes trimmed as Ollama's envconfig.Var does. Unlike Ollama, which refuses to start on
    ``a, b`` or ``a,``, spaces around each entry are trimmed and empty entries skipped."""
    value = (text or "").strip().strip("\"'")
    return [o.strip() for o in value.split(",") if o.strip()] if value else []


@dataclass(frozen=True)
class _Wildcard:
    prefix: str
    suffix: str

    def matches(self, origin: str) -> bool:
        # gin-contrib/cors validateWildcardOrigin: "*x" suffix, "x*" prefix, "x*y" both
        return origin.startswith(self.prefix) and origin.endswith(self.suffix)


class OriginPolicy:
    """Which cross-origin pages may call the bridge, and the CORS headers they get."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        listed = [*extra]
        for origin in listed:
            if origin.count("*") > 1:
                raise UsageError(_("origin {origin!r} has more than one '*'; only one is allowed").format(
                    origin=origin))  # fmt: skip
            if "*" not in origin and not origin.lower().startswith(_SCHEMES):
                raise UsageError(
                    _("origin {origin!r} is not like http://host:port or app://*: an origin must start with "
                      "http://, https:// or a browser-extension scheme, or contain '*'").format(origin=origin)
                )  # fmt: skip
        everything = [*listed, *_default_origins()]
        self.allow_all = "*" in everything
        self.extra = tuple(listed)
        self.exact = frozenset(o.lower() for o in everything if "*" not in o)
        self.wildcards = tuple(_Wildcard(*o.split("*", 1)) for o in everything if "*" in o)

    def allows(self, origin: str) -> bool:
        return self.allow_all or origin in self.exact or any(w.matches(origin) for w in self.wildcards)

    @staticmethod
    def is_cross_origin(origin: str | None, host: str | None) -> bool:
        """gin-contrib/cors: no Origin, or ``Origin`` equal to ``http(s)://`` + Host, is not CORS."""
        if not origin:
            return False
        return origin not in (f"http://{host or ''}", f"https://{host or ''}")

    def response_headers(self, origin: str) -> list[tuple[str, str]]:
        """Headers on an answer to an allowed cross-origin request (not a preflight)."""
        if self.allow_all:
            return [("Access-Control-Allow-Origin", "*")]
        return [("Vary", "Origin"), ("Access-Control-Allow-Origin", origin)]

    def preflight_headers(self, origin: str) -> list[tuple[str, str]]:
        """Headers on the bridge's own answer (204) to an allowed preflight."""
        headers = [
            ("Access-Control-Allow-Methods", ",".join(ALLOWED_METHODS)),
            ("Access-Control-Allow-Headers", ",".join(ALLOWED_HEADERS)),
            ("Access-Control-Max-Age", str(MAX_AGE_S)),
        ]
        if self.allow_all:
            return [*headers, ("Access-Control-Allow-Origin", "*")]
        vary = [("Vary", v) for v in ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")]
        return [*headers, *vary, ("Access-Control-Allow-Origin", origin)]


class HostGuard:
    """Which ``Host`` header values reach the bridge (the DNS rebinding guard)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        names = set()
        for entry in extra:
            name = host_of(entry)
            if not name or any(c in entry for c in "/*@ \t") or len(name) > _MAX_HOST:
                raise UsageError(
                    _("{entry!r} is not a host name or address for --allowed-hosts (like myhost.example or "
                      "192.168.1.5; no scheme, no wildcard)").format(entry=entry)
                )  # fmt: skip
            names.add(name)
        self.extra = frozenset(names)

    def allows(self, header: str | None) -> bool:
        if not header:
            return True  # no Host at all (HTTP/1.0): not a browser, which always sends one; Ollama agrees
        if len(header) > _MAX_HOST + 8:
            return False
        host = host_of(header)
        if host in self.extra:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host == "localhost" or host.endswith(".localhost")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return ip.is_loopback or ip.is_unspecified

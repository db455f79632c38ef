"""The links a phone opens (``https://HOST:PORT/app/#pair=CODE&fp=FINGERPRINT``) and their QR codes.

The secret part (a pairing code or a key) travels in the URL's fragment, which a browser never sends
to a server: it cannot reach a log, a proxy or a ``Referer``. The app reads it, removes it from the
address bar and history, and posts it in a request body.
"""

from __future__ import annotations

import ipaddress
from typing import TextIO
from urllib.parse import quote

from homellm.serve.network import http_url


def app_url(scheme: str, host: str, port: int, **fragment: str | None) -> str:
    """``https://host:port/app/#pair=...&fp=...`` (fields that are None are left out)."""
    parts = [f"{name}={quote(value, safe=':-_')}" for name, value in fragment.items() if value]
    return http_url(scheme, host, port) + "/app/" + ("#" + "&".join(parts) if parts else "")


def lan_host(preferred: str | None = None) -> str:
    """The address a phone can reach this machine by: ``preferred`` unless it is loopback, else the first
    LAN IPv4 address (phones often cannot resolve ``.local`` names in a browser), else ``HOST.local``."""
    from homellm.serve.network import hostname, lan_addresses

    if preferred and not _is_loopback(preferred):
        return preferred
    v4 = [a for a in lan_addresses() if ":" not in a]
    return v4[0] if v4 else f"{hostname()}.local"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def qr_svg_data_uri(text: str) -> str:
    """A QR code as an SVG ``data:`` URI (an ``<img>`` source the page's CSP allows)."""
    import segno

    return str(segno.make(text, error="m").svg_data_uri(scale=6, border=2))


def print_qr(text: str, out: TextIO) -> None:
    """A QR code in the terminal (half-block characters: two modules per character cell)."""
    import segno

    segno.make(text, error="m").terminal(out=out, compact=True, border=2)

"""Saved connections: the server's URL, its pinned certificate and the device key.

Profiles live in HOMELLM_HOME/profiles.json, readable only by the user. Every connection to a
profile's server trusts exactly the pinned certificate (no CA, no hostname check); a server
presenting any other certificate is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from homellm.errors import HomeLLMError, NotFoundError, UsageError
from homellm.i18n import _
from homellm.serve.tls import fingerprint_of_pem
from homellm.store.db import private_folder


class PinMismatch(HomeLLMError):
    """The server presents a different certificate than the one pinned."""

    exit_code = 3


@dataclass
class Profile:
    name: str
    url: str
    fingerprint: str
    cert_pem: str
    key: str

    @property
    def host_port(self) -> tuple[str, int]:
        return split_url(self.url)

    def ssl_context(self) -> ssl.SSLContext:
        return pinned_context(self.cert_pem)


def split_url(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(_("{url!r} is not a URL like https://host:11435").format(url=url))
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def normalize_target(target: str, default_port: int = 11435) -> str:
    """``host``, ``host:port`` or a URL -> ``https://host:port``."""
    t = target.strip()
    if not t or any(c.isspace() for c in t):
        raise UsageError(_("{target!r} is not a host name, address or URL").format(target=target))
    if "://" not in t:
        t = "https://" + (t if ":" in t.strip("[]").split("]")[-1] else f"{t}:{default_port}")
    host, port = split_url(t)
    scheme = urlparse(t).scheme
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def pinned_context(cert_pem: str) -> ssl.SSLContext:
    """Trust exactly this certificate, whatever name or address we reached it by."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=cert_pem)
    ctx.check_hostname = False  # the pin, not the name, identifies the server
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a CA-issued leaf can be pinned too
    return ctx


def fetch_certificate(host: str, port: int, timeout: float = 5.0) -> str:
    """The PEM certificate a TLS server presents (not verified: the caller compares fingerprints)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, ctx.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise HomeLLMError(
            _("cannot get a TLS certificate from {host}:{port}: {exc}").format(host=host, port=port, exc=exc)
        ) from None
    if der is None:
        raise HomeLLMError(_("{host}:{port} presented no certificate").format(host=host, port=port))
    return ssl.DER_cert_to_PEM_cert(der)


def check_pin(profile: Profile) -> str:
    """The server's current fingerprint; raises PinMismatch if it is not the pinned one."""
    host, port = profile.host_port
    now = fingerprint_of_pem(fetch_certificate(host, port).encode())
    if now != profile.fingerprint:
        raise PinMismatch(
            _(
                "the certificate of {url} changed: pinned {pinned}, now {now}. Refusing to connect. If the server's "
                "certificate was replaced on purpose, pair again (`homellm pair` on the server, then `homellm connect "
                "{url} --code CODE`), or compare the new fingerprint with the one `homellm serve` prints and run "
                "`homellm connect {url} --key --fingerprint NEW`"
            ).format(url=profile.url, pinned=profile.fingerprint, now=now)
        )
    return now


class ProfileStore:
    def __init__(self, home: Path) -> None:
        self.path = home / "profiles.json"

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except ValueError:
            raise HomeLLMError(_("{path} is damaged; move it away and connect again").format(path=self.path)) from None
        return data if isinstance(data, dict) else {}

    def all(self) -> list[Profile]:
        return [Profile(**p) for p in self._read().get("profiles", {}).values()]

    def get(self, name: str | None) -> Profile:
        data = self._read()
        profiles = data.get("profiles", {})
        if name is None:
            name = data.get("default")
            if not name:
                raise UsageError(_("no server connected yet; run: homellm connect HOST --code CODE"))
        if name not in profiles:
            raise NotFoundError(_("profile"), name, list(profiles))
        return Profile(**profiles[name])

    def save(self, profile: Profile, make_default: bool = True) -> None:
        data = self._read()
        data.setdefault("profiles", {})[profile.name] = asdict(profile)
        if make_default or "default" not in data:
            data["default"] = profile.name
        private_folder(self.path.parent)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        with contextlib.suppress(OSError):
            tmp.chmod(0o600)
        tmp.replace(self.path)

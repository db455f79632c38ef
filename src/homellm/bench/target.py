"""What to benchmark: a saved connection (profile) or a URL, and which API it speaks."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from homellm.errors import HomeLLMError, UsageError
from homellm.i18n import _


@dataclass
class Target:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    verify: ssl.SSLContext | bool = True
    api: str = "ollama"  # ollama | openai
    label: str = ""
    server: str = ""  # what the server says it is (gateway backend, Ollama version, ...)

    def client(self, **kw: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, verify=self.verify, **kw)  # type: ignore[arg-type]


def resolve(spec: str | None, key: str | None = None, cacert: Path | None = None) -> Target:
    """A profile name (default: the last connected), or an http(s) URL of any Ollama/OpenAI server.

    ``key`` comes from ``HOMELLM_KEY`` or standard input, never from the command line; ``cacert``
    pins a URL target's TLS certificate (the gateway's ``tls/cert.pem``).
    """
    from homellm.connect.profiles import ProfileStore, check_pin, pinned_context
    from homellm.settings import get_settings

    if spec and "://" in spec:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        verify: ssl.SSLContext | bool = True
        if cacert is not None:
            if not cacert.is_file():
                raise UsageError(_("no such file: {path}").format(path=cacert))
            verify = pinned_context(cacert.read_text())
        target = Target(spec.rstrip("/"), headers, verify, label=spec)
    else:
        profile = ProfileStore(get_settings().home).get(spec)
        check_pin(profile)
        target = Target(profile.url, {"Authorization": f"Bearer {profile.key}"}, profile.ssl_context(),
                        label=profile.name)  # fmt: skip
    target.api, target.server = _probe(target)
    return target


@contextlib.contextmanager
def local_gateway() -> Iterator[Target]:
    """The gateway on this machine, pinned to its own certificate, with a one-hour key made for the run
    and revoked after it (homellm keeps only key hashes, so no existing key can be read back)."""
    import time

    from homellm.connect.profiles import pinned_context
    from homellm.serve.network import http_url
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.keys import KeyStore

    settings = get_settings()
    cert = settings.home / "tls" / "cert.pem"
    scheme = "https" if cert.exists() else "http"
    url = http_url(scheme, "127.0.0.1", settings.port)
    keys = KeyStore(open_database(settings.home))
    key, secret = keys.create(f"bench-local-{int(time.time())}", None, expires_in=3600)
    try:
        verify: ssl.SSLContext | bool = pinned_context(cert.read_text()) if cert.exists() else True
        target = Target(url, {"Authorization": f"Bearer {secret}"}, verify, label=_("this machine's gateway"))
        try:
            target.api, target.server = _probe(target)
        except HomeLLMError:
            raise HomeLLMError(_("no gateway answers at {url}; start it with `homellm up` (or give --port)").format(
                url=url)) from None  # fmt: skip
        yield target
    finally:
        keys.revoke(key.name)


def _probe(t: Target) -> tuple[str, str]:
    try:
        with httpx.Client(base_url=t.url, headers=t.headers, verify=t.verify, timeout=10) as c:
            r = c.get("/api/version")
            if r.status_code == 200 and "version" in r.json():
                health = c.get("/homellm/health")
                if health.status_code == 200:
                    return "ollama", f"homellm {r.json()['version']}: {health.json().get('describe', '')}"
                return "ollama", f"Ollama {r.json()['version']}"
            if r.status_code == 401:
                raise UsageError(
                    _(
                        "{url} needs an API key: set HOMELLM_KEY or pass --key-stdin, or use a profile "
                        "(homellm connect); for this machine's gateway use --local"
                    ).format(url=t.url)
                )
            m = c.get("/v1/models")
            if m.status_code == 200:
                return "openai", "OpenAI-compatible server"
            if m.status_code == 401:
                raise UsageError(_("{url} needs an API key: set HOMELLM_KEY or pass --key-stdin").format(url=t.url))
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise HomeLLMError(
                _(
                    "the certificate of {url} is not trusted: pin it with --cacert FILE (a homellm "
                    "gateway's is HOMELLM_HOME/tls/cert.pem) or connect with `homellm connect`; for "
                    "this machine's gateway use --local"
                ).format(url=t.url)
            ) from None
        raise HomeLLMError(_("cannot reach {url}: {error}").format(url=t.url, error=exc)) from None
    except httpx.HTTPError as exc:
        raise HomeLLMError(_("cannot reach {url}: {error}").format(url=t.url, error=exc)) from None
    except ValueError:
        pass
    raise HomeLLMError(_("{url} speaks neither the Ollama nor the OpenAI API").format(url=t.url))

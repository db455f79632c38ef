"""What to benchmark: a saved connection (profile) or a URL, and which API it speaks."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import httpx

from homellm.errors import HomeLLMError, UsageError


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


def resolve(spec: str | None, key: str | None = None) -> Target:
    """A profile name (default: the last connected), or an http(s) URL of any Ollama/OpenAI server."""
    from homellm.connect.profiles import ProfileStore, check_pin
    from homellm.settings import get_settings

    if spec and "://" in spec:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        target = Target(spec.rstrip("/"), headers, True, label=spec)
    else:
        profile = ProfileStore(get_settings().home).get(spec)
        check_pin(profile)
        target = Target(profile.url, {"Authorization": f"Bearer {profile.key}"}, profile.ssl_context(),
                        label=profile.name)  # fmt: skip
    target.api, target.server = _probe(target)
    return target


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
                raise UsageError(f"{t.url} needs an API key: pass --key KEY, or use a profile (homellm connect)")
            m = c.get("/v1/models")
            if m.status_code == 200:
                return "openai", "OpenAI-compatible server"
            if m.status_code == 401:
                raise UsageError(f"{t.url} needs an API key: pass --key KEY")
    except httpx.HTTPError as exc:
        raise HomeLLMError(f"cannot reach {t.url}: {exc}") from None
    except ValueError:
        pass
    raise HomeLLMError(f"{t.url} speaks neither the Ollama nor the OpenAI API")

"""``homellm ping``: find where the path to the server breaks, one step at a time, and say what to do."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import httpx

from homellm.connect.profiles import Profile, fetch_certificate
from homellm.errors import HomeLLMError
from homellm.serve.tls import fingerprint_of_pem


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: a pool member that is down is shown, but the server still answers


def diagnose(profile: Profile) -> list[Step]:
    """Run the steps in order; stop at the first failure (later steps would only repeat it)."""
    host, port = profile.host_port
    steps: list[Step] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addrs = sorted({str(i[4][0]) for i in infos})
        steps.append(Step("name resolution", True, f"{host} -> {', '.join(addrs)}"))
    except socket.gaierror as exc:
        steps.append(Step("name resolution", False, f"{host}: {exc.strerror}",
                          "check the name, or use the server's IP address (homellm discover lists it); on a "
                          "different network or VPN the .local name does not resolve"))  # fmt: skip
        return steps
    try:
        with socket.create_connection((host, port), timeout=4):
            pass
        steps.append(Step("TCP connection", True, f"port {port} is open"))
    except TimeoutError:
        steps.append(Step("TCP connection", False, f"no answer from {host}:{port} (timed out)",
                          "a firewall is dropping the traffic: on the server run `homellm firewall --apply`, "
                          "or check that both machines are on the same network"))  # fmt: skip
        return steps
    except OSError as exc:
        steps.append(Step("TCP connection", False, f"{host}:{port} refused the connection ({exc.strerror})",
                          "the gateway is not running there: start it with `homellm up` (or `homellm serve "
                          "--host 0.0.0.0`), and check the port"))  # fmt: skip
        return steps
    try:
        now = fingerprint_of_pem(fetch_certificate(host, port).encode())
    except HomeLLMError as exc:
        steps.append(Step("TLS", False, str(exc), "the port does not speak TLS; is it the gateway's port?"))
        return steps
    if now != profile.fingerprint:
        steps.append(Step("TLS certificate", False, f"the server presents {now}, not the pinned {profile.fingerprint}",
                          "if the server's certificate was replaced on purpose, connect again with the new "
                          "fingerprint; otherwise someone may be intercepting: do not continue"))  # fmt: skip
        return steps
    steps.append(Step("TLS certificate", True, f"matches the pinned {profile.fingerprint[:23]}…"))
    try:
        with httpx.Client(base_url=profile.url, verify=profile.ssl_context(), timeout=10,
                          headers={"Authorization": f"Bearer {profile.key}"}) as c:  # fmt: skip
            auth = c.get("/api/tags")
            if auth.status_code in (401, 403):
                steps.append(Step("authentication", False, f"the server refused the key (HTTP {auth.status_code})",
                                  "the key was revoked, expired or mistyped: pair again with "
                                  "`homellm pair` on the server and `homellm connect --code`"))  # fmt: skip
                return steps
            steps.append(Step("authentication", True, f"key {profile.key[:8]}… accepted"))
            health = c.get("/homellm/health")
            if health.status_code != 200:
                detail = health.json().get("detail", f"HTTP {health.status_code}")
                steps.append(Step("backend", False, detail, "on the server: is Ollama (or the engine) running? "
                                  "`homellm doctor` there tells more"))  # fmt: skip
                return steps
            steps.append(Step("backend", True, health.json().get("describe", "answering")))
            steps += _pool_members(health.json())
            models = [m["name"] for m in auth.json().get("models", [])]
            steps.append(Step("models", bool(models), ", ".join(models) or "none visible to this key",
                              "" if models else "ask the server's admin to allow a model for this key"))  # fmt: skip
    except (httpx.HTTPError, ssl.SSLError) as exc:
        steps.append(Step("HTTPS request", False, str(exc), "retry; if it persists run `homellm doctor` on the server"))
    return steps


def _pool_members(health: dict[str, object]) -> list[Step]:
    """A pool's members, as an admin key sees them in /homellm/health (other keys see none)."""
    from homellm.untrusted import visible

    members = health.get("backends")
    steps = []
    for m in members if isinstance(members, list) else []:
        if not isinstance(m, dict):
            continue
        name, state = visible(str(m.get("name", "?")), 64), visible(str(m.get("state", "?")), 20)
        loaded = ", ".join(visible(str(n), 80) for n in m.get("loaded") or []) or "none"
        if state in ("up", "half-open"):
            detail = f"{state}, {len(m.get('models') or [])} models, loaded: {loaded}"
        else:
            why = visible(str(m.get("detail") or ""), 200)
            detail = f"{state} ({why})" if why else state
        fix = "" if state == "up" else "it is routed around; check that machine (homellm doctor there)"
        steps.append(Step(f"backend {name}", state == "up", detail, fix, required=False))
    return steps

"""``homellm ping``: find where the path to the server breaks, one step at a time, and say what to do."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import httpx

from homellm.connect.profiles import Profile, fetch_certificate
from homellm.errors import HomeLLMError
from homellm.i18n import _
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
        steps.append(Step(_("name resolution"), True, f"{host} -> {', '.join(addrs)}"))
    except socket.gaierror as exc:
        steps.append(Step(_("name resolution"), False, f"{host}: {exc.strerror}",
                          _("check the name, or use the server's IP address (homellm discover lists it); on a "
                          "different network or VPN the .local name does not resolve")))  # fmt: skip
        return steps
    try:
        with socket.create_connection((host, port), timeout=4):
            pass
        steps.append(Step(_("TCP connection"), True, _("port {port} is open").format(port=port)))
    except TimeoutError:
        steps.append(
            Step(
                _("TCP connection"),
                False,
                _("no answer from {host}:{port} (timed out)").format(host=host, port=port),
                _(
                    "a firewall is dropping the traffic: on the server run `homellm firewall --apply`, "
                    "or check that both machines are on the same network"
                ),
            )
        )
        return steps
    except OSError as exc:
        steps.append(
            Step(
                _("TCP connection"),
                False,
                _("{host}:{port} refused the connection ({strerror})").format(
                    host=host, port=port, strerror=exc.strerror
                ),
                _(
                    "the gateway is not running there: start it with `homellm up` (or `homellm serve "
                    "--host 0.0.0.0`), and check the port"
                ),
            )
        )
        return steps
    try:
        now = fingerprint_of_pem(fetch_certificate(host, port).encode())
    except HomeLLMError as exc:
        steps.append(Step(_("TLS"), False, str(exc), _("the port does not speak TLS; is it the gateway's port?")))
        return steps
    if now != profile.fingerprint:
        steps.append(
            Step(
                _("TLS certificate"),
                False,
                _("the server presents {now}, not the pinned {fingerprint}").format(
                    now=now, fingerprint=profile.fingerprint
                ),
                _(
                    "if the server's certificate was replaced on purpose, connect again with the new "
                    "fingerprint; otherwise someone may be intercepting: do not continue"
                ),
            )
        )
        return steps
    steps.append(
        Step(
            _("TLS certificate"),
            True,
            _("matches the pinned {fingerprint}…").format(fingerprint=profile.fingerprint[:23]),
        )
    )
    try:
        with httpx.Client(base_url=profile.url, verify=profile.ssl_context(), timeout=10,
                          headers={"Authorization": f"Bearer {profile.key}"}) as c:  # fmt: skip
            auth = c.get("/api/tags")
            if auth.status_code in (401, 403):
                steps.append(
                    Step(
                        _("authentication"),
                        False,
                        _("the server refused the key (HTTP {status_code})").format(status_code=auth.status_code),
                        _(
                            "the key was revoked, expired or mistyped: pair again with "
                            "`homellm pair` on the server and `homellm connect --code`"
                        ),
                    )
                )
                return steps
            steps.append(Step(_("authentication"), True, _("key {prefix}… accepted").format(prefix=profile.key[:8])))
            health = c.get("/homellm/health")
            if health.status_code != 200:
                detail = health.json().get("detail", f"HTTP {health.status_code}")
                steps.append(Step(_("backend"), False, detail, _("on the server: is Ollama (or the engine) running? "
                                  "`homellm doctor` there tells more")))  # fmt: skip
                return steps
            steps.append(Step(_("backend"), True, health.json().get("describe", _("answering"))))
            steps += _pool_members(health.json())
            models = [m["name"] for m in auth.json().get("models", [])]
            steps.append(Step(_("models"), bool(models), ", ".join(models) or _("none visible to this key"),
                              "" if models else _("ask the server's admin to allow a model for this key")))  # fmt: skip
    except (httpx.HTTPError, ssl.SSLError) as exc:
        steps.append(
            Step(_("HTTPS request"), False, str(exc), _("retry; if it persists run `homellm doctor` on the server"))
        )
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
        loaded = ", ".join(visible(str(n), 80) for n in m.get("loaded") or []) or _("none")
        if state in ("up", "half-open"):
            detail = _("{state}, {n} models, loaded: {loaded}").format(
                state=state, n=len(m.get("models") or []), loaded=loaded
            )
        else:
            why = visible(str(m.get("detail") or ""), 200)
            detail = f"{state} ({why})" if why else state
        fix = "" if state == "up" else _("it is routed around; check that machine (homellm doctor there)")
        steps.append(Step(_("backend {name}").format(name=name), state == "up", detail, fix, required=False))
    return steps

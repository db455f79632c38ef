"""``homellm doctor``: audit the host for the settings that expose a local LLM."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

from homellm.i18n import N_, _
from homellm.settings import Settings
from homellm.store.keys import ApiKey

OLLAMA_PORT = 11434
FIX_OLLAMA_HOST = {
    "Windows": N_(
        "remove OLLAMA_HOST in System Properties > Environment Variables (or set it to 127.0.0.1), "
        "then quit Ollama from the tray and start it again"
    ),
    "Darwin": N_("launchctl unsetenv OLLAMA_HOST, then quit and reopen the Ollama app"),
    "Linux": N_(
        "sudo systemctl edit ollama.service and remove Environment=OLLAMA_HOST=0.0.0.0, then "
        "sudo systemctl restart ollama"
    ),
}


@dataclass
class Finding:
    status: str  # ok | warn | fail
    check: str
    detail: str
    fix: str = ""


def _open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.3):
            return True
    except OSError:
        return False


def check_ollama(settings: Settings, lan: list[str], os_name: str) -> list[Finding]:
    out = []
    exposed = [ip for ip in lan if _open(ip, OLLAMA_PORT)]
    host = (settings.ollama_host or "").strip()
    bound_wide = host.startswith(("0.0.0.0", "::", "[::]")) or (host and not host.startswith(("127.", "localhost")))
    if exposed or bound_wide:
        addresses = ", ".join(f"{ip}:{OLLAMA_PORT}" for ip in exposed)
        where = _("answers on {addresses}").format(addresses=addresses) if exposed else f"OLLAMA_HOST={host}"
        out.append(
            Finding(
                "fail",
                _("Ollama exposed"),
                _("Ollama {where} without authentication").format(where=where),
                _("{fix}; let homellm serve the LAN").format(
                    fix=_(FIX_OLLAMA_HOST.get(os_name, FIX_OLLAMA_HOST["Linux"]))
                ),
            )
        )
    else:
        out.append(Finding("ok", _("Ollama exposed"), _("Ollama is not reachable from the network")))
    if (settings.ollama_origins or "").strip() in ("*", "'*'", '"*"'):
        out.append(
            Finding(
                "fail",
                _("OLLAMA_ORIGINS"),
                _("OLLAMA_ORIGINS=* lets any web page call your Ollama"),
                _("unset OLLAMA_ORIGINS (homellm's gateway has its own origin allowlist)"),
            )
        )
    return out


def check_gateway(settings: Settings, lan: list[str]) -> Finding:
    reachable = [ip for ip in lan if _open(ip, settings.port)]
    if reachable:
        return Finding(
            "ok",
            _("gateway port"),
            _("port {port} answers on {reachable}").format(port=settings.port, reachable=", ".join(reachable)),
        )
    return Finding(
        "warn",
        _("gateway port"),
        _("nothing answers on port {port} from the network").format(port=settings.port),
        _("start it with `homellm up`; if it runs, open the port: `homellm firewall --apply`"),
    )


def check_certificate(home: Path, now: float | None = None) -> Finding:
    from homellm.serve.tls import certificate_expiry

    cert = home / "tls" / "cert.pem"
    if not cert.exists():
        return Finding("warn", _("TLS certificate"), _("none yet"), _("it is made on the first `homellm up`"))
    days = (certificate_expiry(cert).timestamp() - (now or time.time())) / 86400
    if days < 0:
        return Finding(
            "fail",
            _("TLS certificate"),
            _("expired {days:.0f} days ago").format(days=-days),
            _("delete {parent} and restart the gateway; clients must connect again").format(parent=cert.parent),
        )
    if days < 30:
        return Finding(
            "warn", _("TLS certificate"), _("expires in {days:.0f} days").format(days=days), _("renew it before then")
        )
    return Finding("ok", _("TLS certificate"), _("valid for {days:.0f} more days").format(days=days))


def check_keys(keys: list[ApiKey], now: float | None = None) -> list[Finding]:
    now = now or time.time()
    active = [k for k in keys if k.active(now)]
    admins = [k.name for k in active if k.admin]
    stale = [k.name for k in active if (k.last_used_at or k.created_at) < now - 30 * 86400]
    open_scope = [k.name for k in active if k.models is None and not k.admin]
    out = [
        Finding(
            "warn" if len(admins) > 2 else "ok",
            _("admin keys"),
            f"{len(admins)}: {', '.join(admins) or '-'}",
            _("keep admin keys few; revoke the spare ones") if len(admins) > 2 else "",
        )
    ]
    out.append(
        Finding(
            "warn" if stale else "ok",
            _("unused keys"),
            _("unused for 30 days: {names}").format(names=", ".join(stale) or _("none")),
            "homellm keys revoke NAME" if stale else "",
        )
    )
    # a household's own devices may use every model (pairing makes such keys unless given --models): a
    # choice, not a fault; the finding says which keys they are and how to narrow one
    out.append(
        Finding(
            "ok",
            _("model allowlists"),
            _("keys allowed every model: {names}").format(names=", ".join(open_scope) or _("none")),
            _("to limit a device: homellm pair --models a,b (or keys create NAME --models a,b)") if open_scope else "",
        )
    )
    return out


def audit(settings: Settings, keys: list[ApiKey], lan: list[str], os_name: str) -> list[Finding]:
    return [
        *check_ollama(settings, lan, os_name),
        check_gateway(settings, lan),
        check_certificate(settings.home),
        *check_keys(keys),
    ]

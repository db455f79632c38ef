"""Is the backend itself reachable from the LAN? Then the gateway's protection is moot."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from homellm.i18n import _
from homellm.serve.network import lan_addresses


def exposed_addresses(backend_url: str, timeout: float = 0.3) -> list[str]:
    """This host's LAN addresses on which the backend's port accepts connections."""
    parsed = urlparse(backend_url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = (parsed.hostname or "").lower()
    if host not in ("127.0.0.1", "localhost", "::1", *lan_addresses()):
        return []  # a backend on another machine is that machine's business
    open_on = []
    for ip in lan_addresses():
        try:
            with socket.create_connection((ip, port), timeout=timeout):
                open_on.append(ip)
        except OSError:
            continue
    return open_on


def exposure_warning(backend_url: str, kind: str) -> str | None:
    addresses = exposed_addresses(backend_url)
    if not addresses:
        return None
    port = urlparse(backend_url).port
    where = ", ".join(f"{a}:{port}" for a in addresses)
    if kind == "ollama":
        fix = _(
            "Ollama listens beyond loopback (OLLAMA_HOST=0.0.0.0), so anyone on the network can skip the gateway "
            "and use it without a key. Fix: unset OLLAMA_HOST (or set OLLAMA_HOST=127.0.0.1) and restart Ollama "
            "(Windows: remove the variable in System Properties > Environment Variables, then quit Ollama from the "
            "tray; macOS: launchctl unsetenv OLLAMA_HOST; Linux: systemctl edit ollama.service)."
        )
    else:
        fix = _("the backend listens beyond loopback; bind it to 127.0.0.1 so that only the gateway can reach it.")
    return _("the backend is reachable without a key at {where}: {fix}").format(where=where, fix=fix)

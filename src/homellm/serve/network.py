"""Addresses: loopback checks, this host's LAN addresses, the client IP allowlist, the Host guard."""

from __future__ import annotations

import ipaddress
import socket
import sys
from functools import cache

from homellm.i18n import _

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_loopback_bind(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_networks(cidrs: list[str]) -> list[IPNetwork]:
    from homellm.errors import UsageError

    nets = []
    for c in cidrs:
        try:
            nets.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            raise UsageError(_("{c!r} is not an IP network; write it like 192.168.1.0/24").format(c=c)) from None
    return nets


def ip_allowed(ip: str, networks: list[IPNetwork]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


@cache
def lan_addresses() -> tuple[str, ...]:
    """This host's non-loopback IPv4/IPv6 addresses (no link-local IPv6)."""
    import psutil

    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = a.address.split("%")[0]
            try:
                parsed = ipaddress.ip_address(ip)
            except ValueError:
                continue
            if parsed.is_loopback or (parsed.version == 6 and parsed.is_link_local):
                continue
            found.append(ip)
    return tuple(dict.fromkeys(found))


def hostname() -> str:
    return socket.gethostname().split(".")[0]


def allowed_host_names(bind_host: str, extra: list[str]) -> frozenset[str]:
    """Names a Host header may carry: loopback names, this machine's names and addresses, the bind address."""
    name = hostname().lower()
    names = {"localhost", "127.0.0.1", "::1", name, f"{name}.local", *(a.lower() for a in lan_addresses())}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(bind_host.lower().strip("[]"))
    names.update(e.lower() for e in extra)
    return frozenset(names)


def port_taken(host: str, port: int) -> bool:
    """Whether binding ``host:port`` would fail now (another server has it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host.strip("[]") or "0.0.0.0", port))
        except OSError:
            return True
    return False


def http_url(scheme: str, host: str, port: int) -> str:
    """A URL for ``host``: IPv6 literals need brackets (``https://[fd00::2]:11435``)."""
    h = host.strip("[]")
    return f"{scheme}://[{h}]:{port}" if ":" in h else f"{scheme}://{h}:{port}"


def host_of(header: str) -> str:
    """The host part of a Host header value (``[::1]:8080`` -> ``::1``)."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        return h.split(":")[0]
    return h

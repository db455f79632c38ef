"""mDNS: the gateway advertises ``_homellm._tcp.local.``; ``homellm discover`` browses for it.

The TXT record carries the version, the TLS certificate fingerprint and the API fronts. Anyone on the
LAN can announce anything, so a record is only a hint of *where* to connect, never of *who* answers:
the client takes nothing from it but an address and a port (identity comes from the pairing code's
PAKE, or from a fingerprint the user compares). Names and properties are shown literally and bounded.
Shared by serve (advertise) and connect (browse).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import Any

SERVICE = "_homellm._tcp.local."
MAX_FOUND = 64  # a flood of announcements cannot grow the list without bound


@dataclass
class Found:
    name: str
    host: str
    addresses: list[str]
    port: int
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        scheme = "https" if self.properties.get("tls", "1") == "1" else "http"
        addr = self.addresses[0]  # an address zeroconf parsed, never the announced host name
        return f"{scheme}://{f'[{addr}]' if ':' in addr else addr}:{self.port}"


def service_info(instance: str, port: int, addresses: list[str], properties: dict[str, str]) -> Any:
    from zeroconf import ServiceInfo

    packed = [socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in addresses]
    host = socket.gethostname().split(".")[0] + ".local."
    return ServiceInfo(SERVICE, f"{instance}.{SERVICE}", port=port, addresses=packed, properties=properties,
                       server=host)  # fmt: skip


class Advertiser:
    """Registers the gateway on the LAN for as long as it runs."""

    def __init__(self, instance: str, port: int, addresses: list[str], properties: dict[str, str]) -> None:
        self.info = service_info(instance, port, addresses, properties)
        self.addresses = addresses
        self._zc: Any = None

    async def start(self) -> None:
        from zeroconf.asyncio import AsyncZeroconf

        self._zc = AsyncZeroconf(interfaces=self.addresses or None)  # type: ignore[arg-type]
        await self._zc.async_register_service(self.info, allow_name_change=True)

    async def stop(self) -> None:
        if self._zc is not None:
            await self._zc.async_unregister_service(self.info)
            await self._zc.async_close()


def browse(timeout: float = 3.0) -> list[Found]:
    """Every homellm gateway that answers on the LAN within ``timeout`` seconds."""
    return asyncio.run(_browse(timeout))


async def _browse(timeout: float) -> list[Found]:
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    names: set[str] = set()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated) and len(names) < 16 * MAX_FOUND:
            names.add(name)

    azc = AsyncZeroconf()
    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE, handlers=[on_change])
    found: dict[str, Found] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for name in list(names - set(found)):
                if len(found) >= MAX_FOUND:
                    break
                info = AsyncServiceInfo(SERVICE, name)
                if await info.async_request(azc.zeroconf, 1500) and info.parsed_addresses() and info.port:
                    props = {k.decode(errors="replace")[:32]: (v or b"").decode(errors="replace")[:200]
                             for k, v in list(info.properties.items())[:16]}  # fmt: skip
                    found[name] = Found(name.removesuffix("." + SERVICE)[:200], (info.server or "")[:255],
                                        info.parsed_addresses()[:8], info.port, props)  # fmt: skip
            await asyncio.sleep(0.2)
    finally:
        await browser.async_cancel()
        await azc.async_close()
    return sorted(found.values(), key=lambda f: f.name)

"""A small LAN for tests: network namespaces ("machines") joined by veth pairs, made and removed as root.

Each machine has its own loopback, addresses and ports, so a port bound to ``127.0.0.1`` on one is out
of reach from every other, as between two PCs. :meth:`Lan.slow_link` adds a second, emulated link between
two machines whose delay and rate a test sets (:mod:`homellm.testing.link_emulator`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from homellm.testing.link_emulator import EmulatedWire, NetemLink, SlowLink, netem_available

T = TypeVar("T")


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if sys.platform != "linux" or shutil.which("ip") is None:
        return "needs Linux with iproute2"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"hlmprobe{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True)


@dataclass
class Machine:
    name: str
    ns: str
    home: Path
    addresses: dict[str, str] = field(default_factory=dict)  # other machine -> this one's address towards it

    def cmd(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        variables = [f"{k}={v}" for k, v in {"HOMELLM_HOME": str(self.home), "COLUMNS": "200", **(env or {})}.items()]
        return ["ip", "netns", "exec", self.ns, "env", *variables, *args]


class Lan:
    """Machines by name; ``link(a, b)`` joins two with a veth pair on a /24 of its own."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.tag = secrets.token_hex(2)
        self.base = 20 + int(self.tag, 16) % 200
        self.machines = {n: Machine(n, f"hlm-{n}-{self.tag}", root / n) for n in names}
        self._subnets = 0
        self._slow: list[SlowLink] = []
        for m in self.machines.values():
            m.home.mkdir(parents=True, exist_ok=True)
            _run("ip", "netns", "add", m.ns)
            _run("ip", "-n", m.ns, "link", "set", "lo", "up")

    def __getitem__(self, name: str) -> Machine:
        return self.machines[name]

    def _subnet(self) -> str:
        self._subnets += 1
        return f"10.{self.base}.{self._subnets}"

    def link(self, a: str, b: str) -> tuple[str, str]:
        """A veth pair between machines ``a`` and ``b``; returns their addresses on it."""
        ma, mb = self.machines[a], self.machines[b]
        net = self._subnet()
        va, vb = f"v{self.tag}{self._subnets}a", f"v{self.tag}{self._subnets}b"
        _run("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        for dev, m, ip in ((va, ma, f"{net}.1"), (vb, mb, f"{net}.2")):
            _run("ip", "link", "set", dev, "netns", m.ns)
            _run("ip", "-n", m.ns, "addr", "add", f"{ip}/24", "dev", dev)
            _run("ip", "-n", m.ns, "link", "set", dev, "up")
        ma.addresses[b], mb.addresses[a] = f"{net}.1", f"{net}.2"
        self.last_devices = ((ma.ns, va), (mb.ns, vb))
        return f"{net}.1", f"{net}.2"

    def slow_link(self, a: str, b: str) -> tuple[SlowLink, str, str]:
        """A second link between ``a`` and ``b`` whose delay and rate can be set: netem on a veth pair where
        the kernel has it, else an emulated wire. Returns it and the two addresses."""
        if netem_available():
            ip_a, ip_b = self.link(a, b)
            link: SlowLink = NetemLink(self.last_devices)
        else:
            net = self._subnet()
            ip_a, ip_b = f"{net}.1", f"{net}.2"
            link = EmulatedWire(self.machines[a].ns, ip_a, self.machines[b].ns, ip_b, f"{self.tag}{self._subnets}")
        self._slow.append(link)
        return link, ip_a, ip_b

    def close(self) -> None:
        for link in self._slow:
            link.close()
        for m in self.machines.values():
            subprocess.run(["ip", "netns", "del", m.ns], capture_output=True)


def run_in(ns: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread that entered namespace ``ns`` (network namespaces are per thread on Linux):
    every socket it opens is that machine's."""
    import ctypes
    import threading

    result: list[T] = []
    failure: list[BaseException] = []

    def enter_and_run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/var/run/netns/{ns}", "rb") as handle:
            if libc.setns(handle.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
                failure.append(OSError(ctypes.get_errno(), f"setns {ns}"))
                return
        try:
            result.append(fn(*args))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=enter_and_run, name=f"in-{ns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]

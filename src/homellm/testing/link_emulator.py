"""A slow link between two network namespaces: ``tc netem`` where the kernel has it, else a wire of our own.

``tc qdisc add dev X root netem delay D rate R`` on both ends of a veth pair is the usual way to emulate a
LAN in tests. Kernels built without ``CONFIG_NET_SCH_NETEM`` (this project's CI machine is one) refuse
it, so :class:`EmulatedWire` does the same job in user space: two TUN devices, one in each namespace,
joined by a thread that holds every packet for the link's serialization time at the given rate, then
for the given one-way delay, per direction, exactly as netem's ``delay`` and ``rate`` do (store and
forward, FIFO, a bounded queue). The kernels on both sides run their real TCP over it. The TUN devices
carry 64 KB packets, so that a Python thread keeps up with a gigabit.

Both kinds are :class:`SlowLink`: ``set(delay_s, rate_bits_per_s)`` changes the link in place.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import select
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Protocol

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MTU = 65000
QUEUE_LIMIT = 1000  # packets waiting per direction, like netem's default limit


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True)


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (tried on a throwaway dummy-free veth)."""
    tag = os.urandom(2).hex()
    a, b = f"hnq{tag}a", f"hnq{tag}b"
    try:
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
    except subprocess.CalledProcessError:
        return False
    try:
        r = subprocess.run(["tc", "qdisc", "add", "dev", a, "root", "netem", "delay", "1ms"], capture_output=True)
        return r.returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)


class SlowLink(Protocol):
    kind: str

    def set(self, delay_s: float, rate_bits_per_s: float | None) -> None: ...

    def close(self) -> None: ...


@dataclass
class NetemLink:
    """netem on both ends of an existing veth pair (each direction gets the delay and the rate)."""

    ends: tuple[tuple[str, str], tuple[str, str]]  # (namespace, device) x 2
    kind: str = "tc netem"

    def set(self, delay_s: float, rate_bits_per_s: float | None) -> None:
        for ns, dev in self.ends:
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)
            args = ["delay", f"{delay_s * 1e3:g}ms"]
            if rate_bits_per_s:
                args += ["rate", f"{int(rate_bits_per_s)}bit"]
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", *args],
                           check=True, capture_output=True)  # fmt: skip

    def close(self) -> None:
        for ns, dev in self.ends:
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)


class _Direction:
    def __init__(self, out_fd: int) -> None:
        self.out_fd = out_fd
        self.free_at = 0.0  # when the wire finishes sending what it holds
        self.queue: list[tuple[float, int, bytes]] = []  # (deliver at, sequence, packet)
        self.dropped = 0
        self.carried = 0


class EmulatedWire:
    """A point-to-point link of two TUN devices in two namespaces, with netem's delay and rate semantics."""

    kind = "user-space wire (TUN; this kernel has no netem)"

    def __init__(self, ns_a: str, ip_a: str, ns_b: str, ip_b: str, tag: str) -> None:
        self.names = (f"hwa{tag}", f"hwb{tag}")
        self.fds = [self._tun(n) for n in self.names]
        for name, ns, ip, peer in ((self.names[0], ns_a, ip_a, ip_b), (self.names[1], ns_b, ip_b, ip_a)):
            _ip("link", "set", name, "netns", ns)
            _ip("addr", "add", ip, "peer", peer, "dev", name, ns=ns)
            _ip("link", "set", name, "mtu", str(MTU), "up", ns=ns)
        self.delay_s = 0.0
        self.rate: float | None = None
        self._dirs = [_Direction(self.fds[1]), _Direction(self.fds[0])]  # a -> b, b -> a
        self._seq = 0
        self._stop = False
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True, name="emulated-wire")
        self._thread.start()

    @staticmethod
    def _tun(name: str) -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        os.set_blocking(fd, False)
        return fd

    def set(self, delay_s: float, rate_bits_per_s: float | None) -> None:
        with self._lock:
            self.delay_s, self.rate = delay_s, rate_bits_per_s

    def _accept(self, d: _Direction, packet: bytes, now: float) -> None:
        if len(d.queue) >= QUEUE_LIMIT:
            d.dropped += 1
            return
        start = max(now, d.free_at)
        d.free_at = start + (len(packet) * 8 / self.rate if self.rate else 0.0)
        self._seq += 1
        heapq.heappush(d.queue, (d.free_at + self.delay_s, self._seq, packet))

    def _run(self) -> None:
        while not self._stop:
            now = time.monotonic()
            due = min((d.queue[0][0] for d in self._dirs if d.queue), default=now + 0.05)
            timeout = max(0.0, due - now)
            readable, _w, _x = select.select([*self.fds, self._wake_r], [], [], timeout)
            now = time.monotonic()
            with self._lock:
                for i, fd in enumerate(self.fds):
                    if fd in readable:
                        for _n in range(64):
                            try:
                                packet = os.read(fd, MTU + 64)
                            except BlockingIOError:
                                break
                            self._accept(self._dirs[i], packet, now)
                for d in self._dirs:
                    while d.queue and d.queue[0][0] <= now:
                        _at, _s, packet = heapq.heappop(d.queue)
                        try:
                            os.write(d.out_fd, packet)
                            d.carried += 1
                        except OSError:
                            d.dropped += 1

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in (*self.fds, self._wake_r, self._wake_w):
            os.close(fd)

"""llama.cpp's RPC wire format (protocol 7.0, llama-cpp-python 0.3.36), parsed as bytes stream through a link.

Every request is ``command (1 byte) | payload size (u64, little-endian) | payload``, and the commands that
answer send ``size (u64) | payload`` back, strictly in order: the client's dispatcher waits for each answer
before it sends the next command. That is all a filter needs to follow both streams without buffering
a payload (a tensor may be a gigabyte): it reads headers and the first bytes of small payloads.

Two filters for :func:`homellm.pool.worker_link.relay`:

* :class:`WorkerGuard`, on the worker, in front of its RPC server: known commands only, every payload
  bounded (a size of 2**63 would make the server allocate it), transport upgrades (RDMA) switched off so
  that no byte can leave the TLS link, and the memory the main machine may allocate capped
  (``--max-memory``): an allocation beyond it is answered "failed" without reaching the server, and the
  free memory the server reports is capped to what is left;
* :class:`MainKeepalive`, on the main machine, between llama.cpp and the link: when the link has been
  quiet for a while it sends a harmless ``DEVICE_COUNT`` and swallows the answer, so that the worker's idle
  timeout ends links whose main machine is gone, not links that are merely idle.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from homellm.i18n import _
from homellm.pool.worker_link import LinkRefused

log = logging.getLogger("homellm.worker")

PROTOCOL = (7, 0)  # major, minor this table describes (the HELLO answer says what the server speaks)
TENSOR = 296  # sizeof(rpc_tensor): id, type, buffer, ne[4], nb[4], op, op_params[16], flags, src[10], view, data, name
CAPS = 24  # RPC_CONN_CAPS_SIZE: transport capabilities offered in HELLO
HEADER = 9
MAX_GRAPH = 256 * 1024 * 1024  # a serialized graph: nodes x rpc_tensor; far below this for any real model


class Cmd(IntEnum):
    ALLOC_BUFFER = 0
    GET_ALIGNMENT = 1
    GET_MAX_SIZE = 2
    BUFFER_GET_BASE = 3
    FREE_BUFFER = 4
    BUFFER_CLEAR = 5
    SET_TENSOR = 6
    SET_TENSOR_HASH = 7
    GET_TENSOR = 8
    COPY_TENSOR = 9
    GRAPH_COMPUTE = 10
    GET_DEVICE_MEMORY = 11
    INIT_TENSOR = 12
    GET_ALLOC_SIZE = 13
    HELLO = 14
    DEVICE_COUNT = 15
    GRAPH_RECOMPUTE = 16
    MEMSET_TENSOR = 17


# payload size of each fixed-size request (None: variable, bounded separately)
REQUEST_SIZE: dict[Cmd, int | None] = {
    Cmd.ALLOC_BUFFER: 12, Cmd.GET_ALIGNMENT: 4, Cmd.GET_MAX_SIZE: 4, Cmd.BUFFER_GET_BASE: 8, Cmd.FREE_BUFFER: 8,
    Cmd.BUFFER_CLEAR: 9, Cmd.SET_TENSOR: None, Cmd.SET_TENSOR_HASH: TENSOR + 16, Cmd.GET_TENSOR: TENSOR + 16,
    Cmd.COPY_TENSOR: 2 * TENSOR, Cmd.GRAPH_COMPUTE: None, Cmd.GET_DEVICE_MEMORY: 4, Cmd.INIT_TENSOR: TENSOR,
    Cmd.GET_ALLOC_SIZE: 4 + 11 * TENSOR, Cmd.HELLO: CAPS, Cmd.DEVICE_COUNT: 0, Cmd.GRAPH_RECOMPUTE: 4,
    Cmd.MEMSET_TENSOR: TENSOR + 17,
}  # fmt: skip
ANSWERED = frozenset({
    Cmd.ALLOC_BUFFER, Cmd.GET_ALIGNMENT, Cmd.GET_MAX_SIZE, Cmd.BUFFER_GET_BASE, Cmd.SET_TENSOR_HASH, Cmd.GET_TENSOR,
    Cmd.COPY_TENSOR, Cmd.GET_DEVICE_MEMORY, Cmd.GET_ALLOC_SIZE, Cmd.HELLO, Cmd.DEVICE_COUNT,
})  # fmt: skip
PEEK = 16  # request payload bytes a filter looks at (ALLOC_BUFFER 12, FREE_BUFFER 8, GET_TENSOR's size is past this)


def request(cmd: Cmd, payload: bytes = b"") -> bytes:
    return bytes([cmd]) + struct.pack("<Q", len(payload)) + payload


def answer(payload: bytes) -> bytes:
    return struct.pack("<Q", len(payload)) + payload


@dataclass
class _Message:
    """A request being read: its command, size, bytes still to come, and its first bytes."""

    cmd: Cmd
    size: int
    left: int
    head: bytearray


class RequestStream:
    """Splits the client's byte stream into requests; the payload passes through as it arrives.

    ``feed`` returns (bytes, message) pieces: each header is handed over with its message once ``PEEK``
    bytes of the payload (or all of it) have arrived, so that a caller can decide before forwarding it.
    """

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._header = bytearray()
        self._message: _Message | None = None
        self._held = bytearray()  # header + first payload bytes of the message being decided
        self.requests = 0

    @property
    def at_boundary(self) -> bool:
        return self._message is None and not self._header

    def _bound(self, cmd: Cmd) -> int:
        fixed = REQUEST_SIZE[cmd]
        if fixed is not None:
            return fixed
        return MAX_GRAPH if cmd is Cmd.GRAPH_COMPUTE else TENSOR + 16 + self.max_payload

    def feed(self, data: bytes) -> list[tuple[bytes, _Message | None]]:
        """Pieces in order: (held header and first bytes, the message they start) or (payload bytes, None)."""
        out: list[tuple[bytes, _Message | None]] = []
        view = memoryview(data)
        while view:
            m = self._message
            if m is None:
                take = min(HEADER - len(self._header), len(view))
                self._header += view[:take]
                view = view[take:]
                if len(self._header) < HEADER:
                    break
                code, size = self._header[0], struct.unpack_from("<Q", self._header, 1)[0]
                if code not in Cmd._value2member_map_:
                    raise LinkRefused(_("unknown RPC command {code}").format(code=code))
                cmd = Cmd(code)
                fixed = REQUEST_SIZE[cmd]
                if (fixed is not None and size != fixed) or size > self._bound(cmd):
                    raise LinkRefused(_("RPC {cmd} with a {size}-byte payload refused").format(cmd=cmd.name, size=size))
                self._message = m = _Message(cmd, size, size, bytearray())
                self._held = bytearray(self._header)
                self._header.clear()
                self.requests += 1
            want = min(PEEK, m.size) - len(m.head)
            if want > 0:
                take = min(want, len(view))
                m.head += view[:take]
                self._held += view[:take]
                m.left -= take
                view = view[take:]
                if len(m.head) < min(PEEK, m.size):
                    break
            if self._held:
                out.append((bytes(self._held), m))
                self._held.clear()
            take = min(m.left, len(view))
            if take:
                out.append((bytes(view[:take]), None))
                m.left -= take
                view = view[take:]
            if m.left == 0:
                self._message = None
        return out


class AnswerStream:
    """Splits the server's byte stream into answers, each matched with the request it answers."""

    MAX_FIXED = 64

    def __init__(self) -> None:
        self.expected: deque[tuple[Cmd, bytes, bool]] = deque()  # (command, its first bytes, swallow it)
        self._header = bytearray()
        self._left = 0
        self._head = bytearray()
        self._current: tuple[Cmd, bytes, bool] | None = None
        self.answers = 0

    def expect(self, cmd: Cmd, head: bytes, swallow: bool = False) -> None:
        self.expected.append((cmd, head, swallow))

    def feed(self, data: bytes) -> list[tuple[bytes, tuple[Cmd, bytes, bool], bool]]:
        """Pieces in order: (bytes, the request they answer, whether they end the answer)."""
        out: list[tuple[bytes, tuple[Cmd, bytes, bool], bool]] = []
        view = memoryview(data)
        while view:
            if self._current is None:
                if not self.expected:
                    raise LinkRefused(_("the RPC server sent bytes nobody asked for"))
                take = min(8 - len(self._header), len(view))
                self._header += view[:take]
                view = view[take:]
                if len(self._header) < 8:
                    break
                self._current = self.expected.popleft()
                self._left = struct.unpack("<Q", self._header)[0]
                cmd = self._current[0]
                if cmd is not Cmd.GET_TENSOR and self._left > self.MAX_FIXED:
                    raise LinkRefused(_("an RPC answer of {size} bytes to {cmd}").format(size=self._left, cmd=cmd.name))
                out.append((bytes(self._header), self._current, self._left == 0))
                self._header.clear()
                self._head.clear()
                self.answers += 1
                if self._left == 0:
                    self._current = None
                continue
            take = min(self._left, len(view))
            self._left -= take
            out.append((bytes(view[:take]), self._current, self._left == 0))
            view = view[take:]
            if self._left == 0:
                self._current = None
        return out


class WorkerGuard:
    """The worker's filter in front of its RPC server (see the module's docstring)."""

    active: ClassVar[set[WorkerGuard]] = set()  # sessions forwarding RPC now (llama.cpp serves one at a time)

    def __init__(self, max_memory: int) -> None:
        WorkerGuard.active.add(self)
        self.max_memory = max_memory
        self.requests = RequestStream(max_memory)
        self.answers = AnswerStream()
        self.allocated = 0
        self.peak = 0
        self.buffers: dict[int, int] = {}  # remote pointer -> bytes
        self.refused_allocations = 0
        self._hello_done = False
        self._answer_buf = bytearray()
        self._skip = False  # the current request is answered here, not forwarded
        self._zero = False  # the rest of the current request's payload is zeroed (HELLO's transport offers)

    def outbound(self, data: bytes) -> tuple[bytes, bytes]:
        forward = bytearray()
        reply = bytearray()
        for piece, message in self.requests.feed(data):
            if message is None:  # the rest of the current message's payload
                if self._zero:
                    forward += bytes(len(piece))
                elif not self._skip:
                    forward += piece
                continue
            self._skip = self._zero = False
            cmd, head = message.cmd, bytes(message.head)
            if not self._hello_done and cmd is not Cmd.HELLO:
                raise LinkRefused(_("RPC before HELLO"))
            if cmd is Cmd.HELLO:
                if self._hello_done:
                    raise LinkRefused(_("a second RPC HELLO"))
                self._hello_done = True
                piece = piece[:HEADER] + bytes(len(piece) - HEADER)  # no transport upgrade: bytes stay in the link
                self._zero = True
            elif cmd is Cmd.ALLOC_BUFFER:
                size = struct.unpack_from("<Q", head, 4)[0]
                if self.allocated + size > self.max_memory:
                    self.refused_allocations += 1
                    reply += answer(struct.pack("<QQ", 0, 0))  # llama.cpp reads this as "allocation failed"
                    self._skip = True
                    continue
                self.allocated += size
                self.peak = max(self.peak, self.allocated)
            elif cmd is Cmd.FREE_BUFFER:
                self.allocated -= self.buffers.pop(struct.unpack_from("<Q", head)[0], 0)
            if cmd in ANSWERED:
                self.answers.expect(cmd, head)
            forward += piece
        return bytes(forward), bytes(reply)

    def inbound(self, data: bytes) -> bytes:
        out = bytearray()
        for piece, (cmd, head, _swallow), done in self.answers.feed(data):
            if cmd in (Cmd.HELLO, Cmd.ALLOC_BUFFER, Cmd.GET_DEVICE_MEMORY):
                self._answer_buf += piece  # small fixed answers: rewritten whole
                if done:
                    out += self._rewrite(cmd, head, bytes(self._answer_buf))
                    self._answer_buf.clear()
            else:
                out += piece
        return bytes(out)

    def _rewrite(self, cmd: Cmd, head: bytes, whole: bytes) -> bytes:
        payload = whole[8:]
        if cmd is Cmd.HELLO:
            if len(payload) != 4 + CAPS or (payload[0], payload[1]) != PROTOCOL:
                raise LinkRefused(
                    _("the RPC server speaks protocol {version}, homellm's guard knows {known}").format(
                        version=".".join(str(b) for b in payload[:3]), known="{}.{}".format(*PROTOCOL)
                    )
                )
            return answer(payload[:4] + bytes(CAPS))
        if cmd is Cmd.ALLOC_BUFFER:
            requested = struct.unpack_from("<Q", head, 4)[0]
            pointer, size = struct.unpack("<QQ", payload)
            if pointer:
                self.buffers[pointer] = max(size, requested)
                self.allocated += max(size, requested) - requested
            else:
                self.allocated -= requested
            return whole
        free, total = struct.unpack("<QQ", payload)
        return answer(struct.pack("<QQ", min(free, max(self.max_memory - self.allocated, 0)),
                                  min(total, self.max_memory)))  # fmt: skip

    def idle(self) -> bytes:
        return b""

    def closed(self) -> None:
        WorkerGuard.active.discard(self)
        # llama.cpp opens a short connection per query while it loads a model: those allocate nothing
        log.log(
            logging.INFO if self.peak or self.refused_allocations else logging.DEBUG,
            "RPC session over: at most %.1f MiB allocated of %.1f MiB offered, %d allocation(s) refused",
            self.peak / 2**20, self.max_memory / 2**20, self.refused_allocations,
        )  # fmt: skip


class MainKeepalive:
    """The main machine's filter between llama.cpp and the link: keep-alives, and round trips counted."""

    def __init__(self) -> None:
        self.requests = RequestStream(1 << 62)
        self.answers = AnswerStream()
        self.keepalives = 0
        self._hello_done = False

    def outbound(self, data: bytes) -> tuple[bytes, bytes]:
        for _piece, message in self.requests.feed(data):
            if message is not None:
                self._hello_done |= message.cmd is Cmd.HELLO
                if message.cmd in ANSWERED:
                    self.answers.expect(message.cmd, bytes(message.head))
        return data, b""

    def inbound(self, data: bytes) -> bytes:
        out = bytearray()
        for piece, (_cmd, _head, swallow), _done in self.answers.feed(data):
            if not swallow:
                out += piece
        return bytes(out)

    def idle(self) -> bytes:
        """A ``DEVICE_COUNT`` whose answer is swallowed, when llama.cpp is between requests."""
        if not self._hello_done or not self.requests.at_boundary or self.answers.expected:
            return b""
        self.keepalives += 1
        self.answers.expect(Cmd.DEVICE_COUNT, b"", swallow=True)
        return request(Cmd.DEVICE_COUNT)

    def closed(self) -> None:
        pass

"""The worker's guard in front of llama.cpp's RPC server, fed the byte streams llama.cpp's client and server send
(protocol 7.0: ``command | u64 size | payload`` requests, ``u64 size | payload`` answers), split at awkward places.

The whole path (llama.cpp's real client and server through the link) runs in test_split_machines.py; here each
rule the guard enforces gets a table row, including the ones a well-behaved llama.cpp never triggers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from homellm.pool.worker_link import LinkRefused
from homellm.split.rpc_wire import CAPS, TENSOR, Cmd, MainKeepalive, WorkerGuard, answer, request

MIB = 1024 * 1024
HELLO = request(Cmd.HELLO, b"\x01" * CAPS)  # a client offering every transport upgrade
HELLO_ANSWER = answer(bytes([7, 0, 0, 0]) + b"\x01" * CAPS)


def _alloc(size: int) -> bytes:
    return request(Cmd.ALLOC_BUFFER, struct.pack("<IQ", 0, size))


def _feed(guard: WorkerGuard, data: bytes, step: int) -> tuple[bytes, bytes]:
    """Feed ``data`` in pieces of ``step`` bytes, as TCP may deliver it; what is forwarded, what is answered."""
    forward, reply = bytearray(), bytearray()
    for i in range(0, len(data), step):
        f, r = guard.outbound(data[i : i + step])
        forward += f
        reply += r
    return bytes(forward), bytes(reply)


@pytest.fixture
def guard() -> Iterator[WorkerGuard]:
    g = WorkerGuard(max_memory=64 * MIB)
    yield g
    g.closed()


@pytest.mark.parametrize("step", [1, 5, 9, 10_000])
def test_hello_goes_through_without_transport_upgrades(guard: WorkerGuard, step: int) -> None:
    forward, reply = _feed(guard, HELLO, step)
    assert forward == request(Cmd.HELLO, bytes(CAPS)) and reply == b""  # the offers are zeroed
    back = b"".join(guard.inbound(HELLO_ANSWER[i : i + step]) for i in range(0, len(HELLO_ANSWER), step))
    assert back == answer(bytes([7, 0, 0, 0]) + bytes(CAPS))  # and so is what the server would accept


@pytest.mark.parametrize(
    ("stream", "refusal"),
    [
        (request(Cmd.DEVICE_COUNT), "RPC before HELLO"),
        (HELLO + HELLO, "a second RPC HELLO"),
        (HELLO + bytes([99]) + struct.pack("<Q", 0), "unknown RPC command 99"),
        (HELLO + bytes([Cmd.FREE_BUFFER]) + struct.pack("<Q", 9) + bytes(9), "FREE_BUFFER with a 9-byte payload"),
        (HELLO + bytes([Cmd.SET_TENSOR]) + struct.pack("<Q", 1 << 63), "SET_TENSOR with a"),
        (HELLO + bytes([Cmd.SET_TENSOR]) + struct.pack("<Q", TENSOR + 16 + 64 * MIB + 1), "SET_TENSOR with a"),
        (HELLO + bytes([Cmd.GRAPH_COMPUTE]) + struct.pack("<Q", 257 * MIB), "GRAPH_COMPUTE with a"),
    ],
    ids=["before-hello", "second-hello", "unknown", "wrong-fixed-size", "2**63", "over-max-memory", "huge-graph"],
)
def test_a_stream_that_breaks_a_rule_cuts_the_link(guard: WorkerGuard, stream: bytes, refusal: str) -> None:
    with pytest.raises(LinkRefused, match=refusal):
        _feed(guard, stream, 7)


def test_an_allocation_beyond_max_memory_is_answered_failed_without_reaching_the_server(guard: WorkerGuard) -> None:
    guard.outbound(HELLO)
    guard.inbound(HELLO_ANSWER)
    forward, reply = guard.outbound(_alloc(40 * MIB))
    assert forward == _alloc(40 * MIB) and reply == b""  # within the offer: the server allocates it
    assert guard.inbound(answer(struct.pack("<QQ", 0x1000, 40 * MIB))) == answer(struct.pack("<QQ", 0x1000, 40 * MIB))
    forward, reply = guard.outbound(_alloc(30 * MIB))  # 70 MiB in all, of 64
    assert forward == b"" and reply == answer(struct.pack("<QQ", 0, 0))  # llama.cpp reads: allocation failed
    assert guard.refused_allocations == 1
    # the free memory the server reports is capped to what is left of the offer
    guard.outbound(request(Cmd.GET_DEVICE_MEMORY, struct.pack("<I", 0)))
    capped = guard.inbound(answer(struct.pack("<QQ", 20 * 1024 * MIB, 24 * 1024 * MIB)))
    assert capped == answer(struct.pack("<QQ", 24 * MIB, 64 * MIB))
    # freeing the buffer gives the room back
    guard.outbound(request(Cmd.FREE_BUFFER, struct.pack("<Q", 0x1000)))
    forward, reply = guard.outbound(_alloc(30 * MIB))
    assert forward == _alloc(30 * MIB) and reply == b""


def test_an_answer_nobody_asked_for_or_too_long_cuts_the_link(guard: WorkerGuard) -> None:
    guard.outbound(HELLO)
    guard.inbound(HELLO_ANSWER)
    with pytest.raises(LinkRefused, match="nobody asked for"):
        guard.inbound(answer(b"\x00" * 8))
    other = WorkerGuard(max_memory=MIB)
    try:
        other.outbound(HELLO)
        with pytest.raises(LinkRefused, match="an RPC answer of 4096 bytes to HELLO"):
            other.inbound(answer(bytes(4096)))
    finally:
        other.closed()


def test_the_main_side_keeps_a_quiet_link_alive_and_swallows_the_answer() -> None:
    main = MainKeepalive()
    assert main.idle() == b""  # nothing before llama.cpp said HELLO
    assert main.outbound(HELLO) == (HELLO, b"")
    assert main.inbound(HELLO_ANSWER) == HELLO_ANSWER
    ping = main.idle()
    assert ping == request(Cmd.DEVICE_COUNT)
    assert main.idle() == b""  # one at a time: its answer is still due
    assert main.inbound(answer(struct.pack("<I", 1))) == b""  # swallowed: llama.cpp never sees it
    assert main.keepalives == 1

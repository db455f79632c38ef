"""The gateway's pairing handlers called directly (pure functions over real SQLite): the order of the
checks and every counting boundary, without a network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homellm.errors import GatewayError
from homellm.protocol import pairing as wire
from homellm.serve import pairing as handlers
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.store.pairing import (
    MAX_FAILURES_PER_CODE_AND_SOURCE,
    MAX_FAILURES_PER_SOURCE,
    Code,
    Pairing,
)

FP = "SHA256:" + ":".join(["AB"] * 32)
OTHER_FP = "SHA256:" + ":".join(["CD"] * 32)


class Server:
    def __init__(self, home: Path) -> None:
        db = open_database(home)
        self.store, self.keys, self.sessions = Pairing(db), KeyStore(db), handlers.PairSessions()

    def start(self, body: object, peer: str = "192.168.1.20") -> dict[str, Any]:
        status, answer = handlers.start(body, peer, self.store, self.sessions, FP)
        assert status == 200
        return answer

    def confirm(self, body: object, peer: str = "192.168.1.20", fingerprint: str = FP) -> dict[str, Any]:
        status, answer = handlers.confirm(body, peer, self.store, self.keys, self.sessions, fingerprint)
        assert status == 200
        return answer

    def attempt(self, code: wire.PairingCode, peer: str = "192.168.1.20", seen: str = FP) -> dict[str, Any]:
        """One whole pairing as a device that sees certificate ``seen``."""
        device = wire.ClientExchange(code, "laptop")
        started = self.start(_start_body(code, device), peer)
        keys = device.finish(wire.decode(started["msg"]))
        mac = keys.confirm_client(seen)
        answer = self.confirm({"v": 2, "session": started["session"], "confirm": wire.encode(mac)}, peer)
        assert wire.decode(answer["confirm"]) == keys.confirm_server(seen, mac)
        return keys.open(seen, wire.decode(answer["nonce"]), wire.decode(answer["grant"]))


def _start_body(code: wire.PairingCode, device: wire.ClientExchange, name: str = "laptop") -> dict[str, Any]:
    return {"v": 2, "nameplate": code.nameplate, "msg": wire.encode(device.message), "device": name}


def _wrong(code: Code) -> wire.PairingCode:
    last = code.code.password[-1]
    return wire.PairingCode(code.code.nameplate, code.code.password[:-1] + ("2" if last != "2" else "3"))


def _refused(call: Callable[[], object], status: int, match: str) -> GatewayError:
    with pytest.raises(GatewayError, match=match) as info:
        call()
    assert info.value.status == status, info.value
    return info.value


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def test_a_right_code_pairs_once(server: Server) -> None:
    code = server.store.new_code(["qwen2.5"])
    grant = server.attempt(code.code)
    assert grant["name"] == "laptop" and grant["models"] == ["qwen2.5"] and grant["key"].startswith("hlm_")
    assert server.keys.verify(grant["key"]) is not None
    _refused(lambda: server.attempt(code.code), 401, "wrong, used or expired")


@pytest.mark.parametrize("name", ["_x", ".x", "@x", "-x", "x" * 41, "a\x1b[2Jb", ""])
def test_unusable_device_names_are_refused_before_anything_is_spent(server: Server, name: str) -> None:
    code = server.store.new_code()
    device = wire.ClientExchange(code.code, name)
    _refused(lambda: server.start(_start_body(code.code, device, name)), 400, "cannot be used")
    assert server.store.events(code.id) == [] and server.store.source_failures("192.168.1.20") == 0
    assert len(server.sessions) == 0 and server.store.is_open(code.id)
    assert server.attempt(code.code)["name"] == "laptop"


def test_a_wrong_code_and_a_relay_look_the_same_and_keep_the_code_open(server: Server) -> None:
    code = server.store.new_code()
    _refused(lambda: server.attempt(_wrong(code)), 403, "the code is wrong, or someone .* is relaying")
    _refused(lambda: server.attempt(code.code, seen=OTHER_FP), 403, "did not confirm this server's certificate")
    assert [e.outcome for e in server.store.events(code.id)] == ["failed", "failed"]
    assert server.attempt(code.code)["name"] == "laptop"


def test_failures_per_code_and_source_stop_that_source_only(server: Server) -> None:
    code = server.store.new_code()
    for _ in range(MAX_FAILURES_PER_CODE_AND_SOURCE):
        _refused(lambda: server.attempt(_wrong(code), "192.168.1.66"), 403, "pairing failed")
    _refused(lambda: server.attempt(code.code, "192.168.1.66"), 429, "too many wrong attempts at this code")
    assert server.attempt(code.code, "192.168.1.20")["name"] == "laptop"


def test_failures_per_source_stop_it_on_every_code(server: Server) -> None:
    code = server.store.new_code()
    closed = [a + b for a in "XYZ" for b in "23456789" if a + b != code.code.nameplate]
    for nameplate in closed[:MAX_FAILURES_PER_SOURCE]:  # codes that are not open count against the source
        body = {"v": 2, "nameplate": nameplate, "msg": wire.encode(b"A" * 33), "device": "x"}
        _refused(lambda b=body: server.start(b, "2001:db8::66"), 401, "wrong, used or expired")  # type: ignore[misc]
    # another address of the same /64 is the same source
    _refused(lambda: server.attempt(code.code, "2001:db8::67"), 429, "too many wrong pairing attempts")
    assert server.attempt(code.code, "2001:db8:0:1::1")["name"] == "laptop"  # another /64
    server.store.db.execute("UPDATE pairing_events SET ts = ts - 301")
    assert server.attempt(server.store.new_code().code, "2001:db8::67")["name"] == "laptop-2"


def test_sessions_are_single_use_and_bound_to_their_source(server: Server) -> None:
    code = server.store.new_code()
    device = wire.ClientExchange(code.code, "laptop")
    started = server.start(_start_body(code.code, device))
    mac = wire.encode(device.finish(wire.decode(started["msg"])).confirm_client(FP))
    body = {"v": 2, "session": started["session"], "confirm": mac}
    _refused(lambda: server.confirm(body, "192.168.1.21"), 401, "expired or was already answered")
    _refused(lambda: server.confirm(body), 401, "expired or was already answered")  # taken by the first try
    _refused(lambda: server.confirm({**body, "session": "nope"}), 401, "expired or was already answered")
    assert server.store.is_open(code.id)


def test_open_sessions_are_bounded(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    code = server.store.new_code()
    for _ in range(handlers.MAX_SESSIONS_PER_SOURCE + 3):
        server.start(_start_body(code.code, wire.ClientExchange(code.code, "laptop")))
    assert len(server.sessions) == handlers.MAX_SESSIONS_PER_SOURCE  # a source's oldest give way
    monkeypatch.setattr(handlers, "MAX_SESSIONS", handlers.MAX_SESSIONS_PER_SOURCE + 1)
    server.start(_start_body(code.code, wire.ClientExchange(code.code, "laptop")), "192.168.1.30")
    _refused(lambda: server.start(_start_body(code.code, wire.ClientExchange(code.code, "x")), "192.168.1.31"),
             429, "too many pairing attempts are in progress")  # fmt: skip


def test_round_one_is_rate_limited_per_source(server: Server) -> None:
    code = server.store.new_code()
    for _ in range(handlers.STARTS_PER_MINUTE):
        server.start(_start_body(code.code, wire.ClientExchange(code.code, "laptop")), "192.168.1.40")
    _refused(lambda: server.start(_start_body(code.code, wire.ClientExchange(code.code, "x")), "192.168.1.40"),
             429, "wait a minute")  # fmt: skip
    assert server.attempt(code.code, "192.168.1.20")["name"] == "laptop"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"code": "ABCD-EFGH", "device": "laptop"}, "version 2"),
        ([1, 2], "a JSON object"),
        ({"v": 2, "nameplate": {"a": {"b": [1]}}, "msg": "x", "device": "laptop"}, "must be a string"),
        ({"v": 2, "nameplate": "AB", "msg": "!!", "device": "laptop"}, "not base64"),
        ({"v": 2, "nameplate": "AB", "msg": wire.encode(b"x"), "device": "laptop"}, "33 bytes"),
        ({"v": 2, "nameplate": "AB", "msg": wire.encode(b"A" * 33), "device": "laptop", "admin": True}, "unexpected"),
    ],
)
def test_malformed_round_one_is_400(server: Server, body: object, match: str) -> None:
    _refused(lambda: server.start(body), 400, match)
    assert server.store.source_failures("192.168.1.20") == 0


def test_pairing_needs_tls(server: Server) -> None:
    code = server.store.new_code()
    body = _start_body(code.code, wire.ClientExchange(code.code, "laptop"))
    _refused(lambda: handlers.start(body, "192.168.1.20", server.store, server.sessions, None), 400, "needs .* TLS")


def test_attempts_opened_before_the_limit_cannot_exceed_it(server: Server) -> None:
    code = server.store.new_code()
    wrong = _wrong(code)
    opened = []
    for _ in range(2):  # opened first, answered after the limit is reached
        device = wire.ClientExchange(wrong, "laptop")
        started = server.start(_start_body(wrong, device), "192.168.1.66")
        mac = device.finish(wire.decode(started["msg"])).confirm_client(FP)
        opened.append({"v": 2, "session": started["session"], "confirm": wire.encode(mac)})
    for _ in range(MAX_FAILURES_PER_CODE_AND_SOURCE):
        _refused(lambda: server.attempt(wrong, "192.168.1.66"), 403, "pairing failed")
    for body in opened:
        _refused(lambda b=body: server.confirm(b, "192.168.1.66"), 429, "too many wrong attempts")  # type: ignore[misc]
    assert server.store.code_failures(code.id) == MAX_FAILURES_PER_CODE_AND_SOURCE

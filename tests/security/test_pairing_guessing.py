"""Issue 8 part B: a stranger guessing codes cannot lock the household out of pairing.

The stranger sends real SPAKE2 attempts from other loopback addresses (127.0.0.0/8 all reach the
gateway on 127.0.0.1); the household pairs from 127.0.0.1 with the real client.
"""

from __future__ import annotations

import ssl

import httpx
import pytest
from tests.security.conftest import Served

from homellm.connect.client import pair, server_certificate
from homellm.connect.profiles import pinned_context
from homellm.protocol import pairing as wire
from homellm.store import open_database
from homellm.store.pairing import MAX_FAILURES_PER_CODE, MAX_FAILURES_PER_CODE_AND_SOURCE, Pairing


def _guess(served: Served, tls: ssl.SSLContext, code: wire.PairingCode, source: str) -> int:
    """One whole pairing attempt with ``code`` from ``source``: the status of the last answer."""
    transport = httpx.HTTPTransport(verify=tls, local_address=source)
    device = wire.ClientExchange(code, "stranger")
    with httpx.Client(base_url=served.url, transport=transport, timeout=30) as c:
        r = c.post("/homellm/pair", json={"v": 2, "nameplate": code.nameplate, "msg": wire.encode(device.message),
                                          "device": "stranger"})  # fmt: skip
        if r.status_code != 200:
            return r.status_code
        keys = device.finish(wire.decode(r.json()["msg"]))
        mac = keys.confirm_client(served.tls.fingerprint)  # even seeing the real certificate
        r = c.post("/homellm/pair/confirm", json={"v": 2, "session": r.json()["session"], "confirm": wire.encode(mac)})
        return r.status_code


def _wrong(code: wire.PairingCode, n: int) -> wire.PairingCode:
    """The ``n``-th wrong guess at ``code``'s password (the stranger knows the nameplate)."""
    guess = wire.ALPHABET[n % 31] + wire.ALPHABET[n // 31 % 31] + "2222"
    return wire.PairingCode(code.nameplate, guess if guess != code.password else "333333")


@pytest.fixture
def tls(served: Served) -> ssl.SSLContext:
    return pinned_context(served.tls.cert.read_text())


def test_a_strangers_guesses_do_not_lock_out_the_household(served: Served, tls: ssl.SSLContext) -> None:
    code = Pairing(open_database(served.home)).new_code().code
    statuses = [_guess(served, tls, _wrong(code, n), "127.0.0.2") for n in range(MAX_FAILURES_PER_CODE_AND_SOURCE + 2)]
    assert statuses == [403] * MAX_FAILURES_PER_CODE_AND_SOURCE + [429, 429]
    assert _guess(served, tls, code, "127.0.0.2") == 429  # even the right code, from that address
    pem, _ = server_certificate(served.url)
    assert pair(served.url, str(code), pem, "laptop")["name"] == "laptop"


def test_a_stranger_probing_many_codes_is_stopped_at_its_address(served: Served, tls: ssl.SSLContext) -> None:
    code = Pairing(open_database(served.home)).new_code().code
    closed = [a + b for a in "XYZ" for b in "23456789" if a + b != code.nameplate]
    statuses = {_guess(served, tls, wire.PairingCode(n, "222222"), "127.0.0.3") for n in closed[:20]}
    assert statuses == {401}
    assert _guess(served, tls, code, "127.0.0.3") == 429  # every code is closed to that address now
    pem, _ = server_certificate(served.url)
    assert pair(served.url, str(code), pem, "laptop")["name"] == "laptop"


def test_the_backstop_withdraws_a_code_guessed_from_many_addresses(served: Served, tls: ssl.SSLContext) -> None:
    """The documented residual risk: enough addresses can make the household run `homellm pair` again,
    while their chance of guessing stays at most 50 in 31^6 per code."""
    store = Pairing(open_database(served.home))
    made = store.new_code()
    per_address = MAX_FAILURES_PER_CODE_AND_SOURCE
    statuses = [
        _guess(served, tls, _wrong(made.code, n), f"127.0.1.{n // per_address + 1}")
        for n in range(MAX_FAILURES_PER_CODE)
    ]
    assert statuses == [403] * MAX_FAILURES_PER_CODE
    assert not store.is_open(made.id) and store.events(made.id)[-1].outcome == "withdrawn"
    assert _guess(served, tls, made.code, "127.0.0.1") == 401

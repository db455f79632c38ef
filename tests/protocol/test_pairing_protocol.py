"""Pairing v2 without a network: codes, device names, the SPAKE2 exchange, the MACs and the sealed grant."""

from __future__ import annotations

import base64
import hashlib
import itertools

import pytest

from homellm.errors import UsageError
from homellm.protocol import pairing as wire

FP_SERVER = "SHA256:" + ":".join(["AB"] * 32)
FP_RELAY = "SHA256:" + ":".join(["CD"] * 32)
CODE = wire.PairingCode("K7", "M3PQ9X")


def _exchange(code: wire.PairingCode, server_code: wire.PairingCode | None = None) -> tuple[
    wire.ClientExchange, bytes, wire.PairingKeys, wire.PairingKeys
]:  # fmt: skip
    client = wire.ClientExchange(code, "laptop")
    msg_b, server_keys = wire.server_exchange(server_code or code, "laptop", client.message)
    return client, msg_b, client.finish(msg_b), server_keys


def test_codes_read_forgivingly_and_split_into_nameplate_and_password() -> None:
    for text in ("K7M3-PQ9X", "k7m3-pq9x", " K7M3 PQ9X ", "K7M3PQ9X"):
        assert wire.parse_code(text) == CODE
    assert str(CODE) == "K7M3-PQ9X"
    for bad in ("K7M3-PQ9", "K7M3-PQ9XX", "K7M3-PQ90", "O7M3-PQ9X", "K7M3-PQ9L", ""):
        with pytest.raises(UsageError, match="is not a pairing code"):
            wire.parse_code(bad)


def test_new_codes_avoid_taken_nameplates() -> None:
    every = {a + b for a, b in itertools.product(wire.ALPHABET, repeat=2)}
    assert wire.random_code(every - {"ZZ"}).nameplate == "ZZ"
    with pytest.raises(UsageError, match="every pairing nameplate is in use"):
        wire.random_code(every)
    code = wire.random_code(set())
    assert len(code.password) == wire.PASSWORD_LENGTH and set(code.password) <= set(wire.ALPHABET)


FULLWIDTH = "\uff4c\uff41\uff50\uff54\uff4f\uff50"  # "laptop" typed with a Japanese IME


@pytest.mark.parametrize(
    ("given", "name"),
    [("laptop", "laptop"), ("  my   laptop ", "my laptop"), (FULLWIDTH, "laptop"), ("a" * 40, "a" * 40),
     ("alice@home.lan", "alice@home.lan"), ("x_1", "x_1")],
)  # fmt: skip
def test_device_names_are_normalised(given: str, name: str) -> None:
    assert wire.device_name(given) == name


@pytest.mark.parametrize("bad", ["_x", ".x", "@x", "-x", "", "   ", "a" * 41, "x\ny", "x\x1b[2J", "évé", "a/b", "[/]"])
def test_unusable_device_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="cannot be used"):
        wire.device_name(bad)


@pytest.mark.parametrize(
    ("hostname", "device"), [("laptop.local", "laptop"), ("_weird_host", "weird_host"), ("..", "device"),
                             ("Ünïcode-PC", "n-code-PC"), ("x" * 80, "x" * 40)],
)  # fmt: skip
def test_the_default_device_name_is_always_usable(hostname: str, device: str) -> None:
    assert wire.default_device(hostname) == device
    assert wire.device_name(device) == device


def test_same_code_and_certificate_confirm_both_ways_and_open_the_grant() -> None:
    _, _, client, server = _exchange(CODE)
    mac = client.confirm_client(FP_SERVER)
    assert mac == server.confirm_client(FP_SERVER)
    assert client.confirm_server(FP_SERVER, mac) == server.confirm_server(FP_SERVER, mac)
    nonce, sealed = server.seal(FP_SERVER, {"name": "laptop", "key": "hlm_x", "models": None})
    assert client.open(FP_SERVER, nonce, sealed) == {"name": "laptop", "key": "hlm_x", "models": None}


def test_a_relay_certificate_makes_every_check_fail() -> None:
    """The device sees the relay's certificate, the server its own: same code, no agreement."""
    _, _, client, server = _exchange(CODE)
    mac = client.confirm_client(FP_RELAY)
    assert mac != server.confirm_client(FP_SERVER)  # the server refuses
    # even a server answer computed over the right certificate does not satisfy the device
    assert server.confirm_server(FP_SERVER, mac) != client.confirm_server(FP_RELAY, mac)
    nonce, sealed = server.seal(FP_SERVER, {"key": "hlm_x"})
    with pytest.raises(wire.PairingMessageError):
        client.open(FP_RELAY, nonce, sealed)


def test_a_wrong_code_gives_different_keys() -> None:
    _, _, client, server = _exchange(CODE, wire.PairingCode("K7", "M3PQ9Y"))
    assert client.key != server.key
    assert client.confirm_client(FP_SERVER) != server.confirm_client(FP_SERVER)


def test_a_recorded_transcript_cannot_check_a_candidate_code_offline() -> None:
    """Everything on the wire, and every computation an observer can run with a candidate code,
    treats the right code exactly like a wrong one: only an online attempt tests a guess."""
    client, msg_b, client_keys, server_keys = _exchange(CODE)
    msg_a = client.message
    mac_c = client_keys.confirm_client(FP_SERVER)
    mac_s = server_keys.confirm_server(FP_SERVER, mac_c)
    nonce, sealed = server_keys.seal(FP_SERVER, {"name": "laptop", "key": "hlm_secret", "models": None})
    wire_bytes = b"".join([CODE.nameplate.encode(), msg_a, msg_b, mac_c, mac_s, nonce, sealed])
    wire_text = " ".join(base64.b64encode(p).decode() for p in (msg_a, msg_b, mac_c, mac_s, nonce, sealed))

    # no form of the code or of its hash is on the wire
    forms = [CODE.password, str(CODE), str(CODE).replace("-", ""), CODE.spake2_password().decode()]
    for form in forms:
        assert form.encode() not in wire_bytes and form not in wire_text
        for algo in ("sha256", "sha1", "md5", "blake2b", "sha512"):
            digest = hashlib.new(algo, form.encode()).digest()
            assert digest not in wire_bytes and digest.hex() not in wire_text.lower()

    # an observer's only handle on a candidate is a fresh SPAKE2 run against the recorded messages:
    # it gives the right code no advantage over a wrong one
    for candidate in (CODE, wire.PairingCode("K7", "M3PQ9Y")):
        as_client = wire.ClientExchange(candidate, "laptop").finish(msg_b)
        _, as_server = wire.server_exchange(candidate, "laptop", msg_a)
        for keys in (as_client, as_server):
            assert keys.key not in (client_keys.key, server_keys.key)
            assert keys.confirm_client(FP_SERVER) != mac_c
            assert keys.confirm_server(FP_SERVER, mac_c) != mac_s
            with pytest.raises(wire.PairingMessageError):
                keys.open(FP_SERVER, nonce, sealed)


def test_messages_are_checked_strictly() -> None:
    good = {"v": 2, "nameplate": "K7", "msg": "x", "device": "laptop"}
    assert wire.fields(good, wire.START_FIELDS)["device"] == "laptop"
    bad = [
        ([], "a JSON object"),
        ({**good, "v": 1}, "version 2"),
        ({**good, "v": "2"}, "version 2"),
        ({**good, "v": True}, "version 2"),
        ({**good, "extra": 1}, "unexpected field 'extra'"),
        ({**good, "device": {"nested": ["deep"]}}, '"device" must be a string'),
        ({**good, "msg": None}, '"msg" must be a string'),
        ({**good, "device": "x" * 201}, '"device" is longer than 200'),
    ]
    for body, message in bad:
        with pytest.raises(wire.PairingMessageError, match=message):
            wire.fields(body, wire.START_FIELDS)
    with pytest.raises(wire.PairingMessageError, match="not base64"):
        wire.decode("!!!!")
    with pytest.raises(wire.PairingMessageError, match="33 bytes"):
        wire.decode(base64.b64encode(b"x" * 32).decode(), wire.MESSAGE_BYTES)


@pytest.mark.parametrize("message", [b"A" + b"\x00" * 32, b"C" + b"\x01" * 32, b"B" * 33, b"A" * 20])
def test_malformed_spake2_messages_are_refused(message: bytes) -> None:
    with pytest.raises(wire.PairingMessageError):
        wire.server_exchange(CODE, "laptop", message)

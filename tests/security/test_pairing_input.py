"""Issue 8 parts B and D on /homellm/pair: unusable device names are refused before the code is spent,
and no body, however malformed or deeply nested, gives anything but a 4xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tests.security.conftest import Served

from homellm.connect.client import pair, server_certificate
from homellm.connect.profiles import pinned_context
from homellm.protocol import pairing as wire
from homellm.store import open_database
from homellm.store.pairing import Pairing


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, verify=pinned_context(served.tls.cert.read_text()), timeout=30) as c:
        yield c  # closed before the gateway stops, which would otherwise wait for this idle connection


@pytest.mark.parametrize("name", ["_x", ".x", "@x"])
def test_an_unusable_device_name_is_refused_before_the_code_is_spent(
    served: Served, client: httpx.Client, name: str
) -> None:
    store = Pairing(open_database(served.home))
    made = store.new_code()
    device = wire.ClientExchange(made.code, name)
    r = client.post("/homellm/pair", json={"v": 2, "nameplate": made.code.nameplate,
                                           "msg": wire.encode(device.message), "device": name})  # fmt: skip
    assert r.status_code == 400 and "cannot be used" in r.json()["error"], r.text
    assert store.is_open(made.id) and store.events(made.id) == []
    pem, _ = server_certificate(served.url)
    assert pair(served.url, str(made.code), pem, "x")["name"] == "x"


def _nested(depth: int) -> bytes:
    return b'{"v": 2, "device": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_nested(2000), 400),  # deeper than the JSON decoder's stack
        (b"[" * 4000 + b"]" * 4000, 413),
        (b'{"v": 2, "nameplate": {"a": {"b": {"c": [1, 2, {"d": null}]}}}, "msg": "x", "device": "laptop"}', 400),
        (b'{"v": 2, "session": ["x"], "confirm": {"y": 1}}', 400),
        (b'{"code": "ABCD-EFGH", "device": "laptop"}', 400),  # a pairing v1 client
        (b"[]", 400),
        (b"null", 400),
        (b"\xff\xfe garbage", 400),
        (b"", 400),
        (b'{"v": 2, "nameplate": "AB", "msg": "' + b"A" * 5000 + b'", "device": "x"}', 413),
    ],
)
def test_malformed_bodies_are_4xx(client: httpx.Client, body: bytes, status: int) -> None:
    for path in ("/homellm/pair", "/homellm/pair/confirm"):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (path, r.text)
        assert isinstance(r.json()["error"], str)


def test_other_methods_are_refused(client: httpx.Client) -> None:
    assert client.get("/homellm/pair").status_code == 405
    assert client.post("/homellm/pair/other", json={}).status_code == 404

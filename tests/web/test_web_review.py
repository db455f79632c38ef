"""Holes a review found in the web app's server side, kept as regression tests: an admin key limited to some
models cannot hand out more through the household page, and a browser cannot spend a code meant for a worker."""

from __future__ import annotations

import contextlib

from tests.web.test_web_gateway import Web, web  # noqa: F401 - the fixture

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.store.pairing import Pairing


def test_an_admin_limited_to_some_models_hands_out_no_more_than_it_has(web: Web) -> None:  # noqa: F811
    narrow = KeyStore(open_database(web.home)).create("narrow-admin", ["fake:small"], admin=True)[1]
    c, csrf = web.signed_in(narrow)
    h = {"X-CSRF-Token": csrf}
    with contextlib.closing(c):
        for models in (None, ["fake:large"], ["fake:small", "other"]):
            r = c.post("/app/api/admin/keys", json={"name": "wider", "models": models, "admin": True}, headers=h)
            assert r.status_code == 403, (models, r.text)
            assert c.post("/app/api/admin/codes", json={"models": models}, headers=h).status_code == 403
        ok = c.post("/app/api/admin/keys", json={"name": "same", "models": ["fake:small"]}, headers=h)
        assert ok.status_code == 200 and ok.json()["key"]["models"] == ["fake:small"]
        assert c.post("/app/api/admin/codes", json={"models": ["fake:small"]}, headers=h).status_code == 200
        # nor does it revoke a key that may use more than it may (the household's unlimited admin)
        assert c.post("/app/api/admin/keys/revoke", json={"name": "admin"}, headers=h).status_code == 403
        assert c.post("/app/api/admin/keys/revoke", json={"name": "same"}, headers=h).status_code == 200
    names = {k.name: k.models for k in KeyStore(open_database(web.home)).list()}
    assert "wider" not in names and names["same"] == ("fake:small",)
    assert KeyStore(open_database(web.home)).get("admin").active()


def test_a_code_for_a_worker_is_no_device_code_in_a_browser(web: Web) -> None:  # noqa: F811
    store = Pairing(open_database(web.home))
    code = store.new_code(None, worker={"priority": 0, "weight": 1.0, "max_concurrency": 0, "name": None})
    with web.client() as phone:
        r = phone.post("/app/api/pair", json={"code": str(code.code), "device": "Pixel 8"})
        assert r.status_code == 400, r.text
    assert store.is_open(code.id)  # not spent: the worker it was made for can still join
    assert "Pixel 8" not in {k.name for k in KeyStore(open_database(web.home)).list()}


def test_an_admin_limited_to_some_models_sees_only_those_on_the_server_page(web: Web) -> None:  # noqa: F811
    narrow = KeyStore(open_database(web.home)).create("narrow-admin", ["fake:small"], admin=True)[1]
    c, _csrf = web.signed_in(narrow)
    with contextlib.closing(c):
        data = c.get("/app/api/admin/server").json()
    assert [m["name"] for m in data["models"]] == ["fake:small"]
    assert [m["name"] for m in data["loaded"]] == ["fake:small"]
    assert "127.0.0.1" not in data["backend"]["describe"]  # the backend's address, as /homellm/health hides it


def _declared_only(server: Web, path: str, length: int) -> bytes:
    """Send only the headers of a POST declaring ``length`` bytes of body, and read the answer: a route that
    takes small bodies answers at once, instead of waiting for (and holding) up to the largest body."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(server.tls.cert))
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as raw, context.wrap_socket(raw, server_hostname=host) as s:
        s.settimeout(20)  # the gateway allows a body 60 s: an answer before that is one that did not wait
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {length}\r\n\r\n".encode())  # fmt: skip
        return s.recv(4096)


def test_a_stranger_cannot_make_the_gateway_wait_for_a_large_body_on_the_routes_without_a_key(web: Web) -> None:  # noqa: F811
    for path in ("/app/api/session", "/app/api/pair", "/homellm/pair"):
        answer = _declared_only(web, path, 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:100])

"""Issue 8 part A: the gateway forwards exactly what it checked, so no spelling of "model" escapes the allowlist.

The backend is the Ollama imitation that decodes like Go's encoding/json (checked against real Go in
test_go_json.py): if the gateway checked one name and forwarded bytes that Ollama reads as another,
``Recorder.ran`` would show the forbidden model running.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.conftest import Fake, Keys, run_gateway

from homellm.serve.backends import OllamaBackend
from homellm.store import open_database
from homellm.store.keys import KeyStore

ALLOWED, FORBIDDEN = "fake:small", "fake:large"
ROUTES = {  # path -> the rest of a valid body
    "/api/chat": {"messages": [{"role": "user", "content": "hi"}], "stream": False},
    "/api/generate": {"prompt": "hi", "stream": False},
    "/api/embed": {"input": "hi"},
    "/api/embeddings": {"prompt": "hi"},
    "/api/show": {},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/embeddings": {"input": "hi"},
}


def _rest(path: str) -> str:
    return json.dumps(ROUTES[path])[1:-1]


def _bodies(path: str) -> list[bytes]:
    """Every way of naming a model that some parser reads differently from another."""
    rest = _rest(path)
    sep = "," if rest else ""
    names = [
        f'{{"model":"{ALLOWED}","Model":"{FORBIDDEN}"{sep}{rest}}}',
        f'{{"Model":"{FORBIDDEN}","model":"{ALLOWED}"{sep}{rest}}}',
        f'{{"model":"{ALLOWED}","MODEL":"{FORBIDDEN}"{sep}{rest}}}',
        f'{{"MODEL":"{FORBIDDEN}"{sep}{rest}}}',
        f'{{"mOdEl":"{FORBIDDEN}"{sep}{rest}}}',
        f'{{"Mod\\u0065l":"{FORBIDDEN}"{sep}{rest}}}',
        f'{{"model":"{ALLOWED}","mod\\u0065l":"{FORBIDDEN}"{sep}{rest}}}',
        f'{{"model":"{ALLOWED}"{sep}{rest}}} {{"model":"{FORBIDDEN}"}}',
        f'{{"model":"{ALLOWED}"{sep}{rest},"model":"{FORBIDDEN}"}}',
    ]
    if path == "/api/show":
        names += [
            f'{{"name":"{ALLOWED}","Model":"{FORBIDDEN}"}}',
            f'{{"name":"{ALLOWED}","model":"{FORBIDDEN}"}}',
            f'{{"model":"{ALLOWED}","NAME":"{FORBIDDEN}"}}',
            f'{{"name":"{FORBIDDEN}"}}',
        ]
    return [n.encode() for n in names]


CASES = [(path, body) for path in ROUTES for body in _bodies(path)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, _ollama_fake: Fake, keys: Keys, gateway_home: Path) -> str:
    with run_gateway(gateway_home, OllamaBackend(_ollama_fake.url)) as (url, _):
        yield url  # type: ignore[misc]


@pytest.mark.parametrize(("path", "body"), CASES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(CASES)])
def test_no_spelling_of_model_runs_a_forbidden_model(gateway: str, ollama_fake: Fake, keys: Keys, path: str,
                                                     body: bytes) -> None:  # fmt: skip
    r = httpx.post(gateway + path, content=body, headers={"Authorization": f"Bearer {keys.alice}"})
    assert FORBIDDEN not in {m for _, m in ollama_fake.rec.ran}, (body, ollama_fake.rec.ran)
    assert r.status_code in (400, 403), (r.status_code, r.text)
    if r.status_code == 400:
        assert ollama_fake.rec.requests == []  # refused before anything was forwarded


@pytest.mark.parametrize("path", list(ROUTES))
def test_the_allowed_model_runs_and_what_runs_is_what_was_checked(gateway: str, ollama_fake: Fake, keys: Keys,
                                                                  path: str) -> None:  # fmt: skip
    rest = _rest(path)
    body = f'{{ "model" : "{ALLOWED}" {"," if rest else ""} {rest} }}'.encode()
    r = httpx.post(gateway + path, content=body, headers={"Authorization": f"Bearer {keys.alice}",
                                                          "Content-Type": "text/plain"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert ollama_fake.rec.ran == [(path, ALLOWED)]
    seen = ollama_fake.rec.requests[-1]
    # a canonical re-encoding went upstream, with the gateway's own content type and no client key
    assert seen.headers["content-type"] == "application/json" and "authorization" not in seen.headers
    assert seen.body["model"] == ALLOWED


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'\xef\xbb\xbf{"model":"fake:small"}', "byte-order mark"),
        (b'{"model":"fake:small","options":{"temperature":NaN}}', "NaN"),
        (b'{"model":"fake:small","options":{"temperature":Infinity}}', "Infinity"),
        (b'{"model":"fake:small","options":{"temperature":1e400}}', "too large"),
        (b'{"model":"fake:small","options":{"seed":99999999999999999999}}', "64-bit"),
        (b'{"model":"fake:small","messages":[{"role":"user","content":"\\ud800"}]}', "surrogate"),
        (b'{"model":"fake:small","messages":[{"role":"user","content":"\xff"}]}', "UTF-8"),
        (b'{"model":"fake:small"}{}', "after the JSON"),
        (b'{"model":"fake:small","format":' + b'{"a":' * 100 + b"1" + b"}" * 100 + b"}", "nested"),
        (b'["fake:small"]', "JSON object"),
        (b"", "empty"),
        (b'{"model":"fake:small","messages":[{"role":"user","Content":"a","content":"b"}]}', "'content'"),
        (b'{"model":"fake:small","_debug_render_only":true}', "not accepted"),
        (b'{"model":"' + b"m" * 300 + b'"}', "at most 256"),
        (b'{"model":"fake:small\\u0000"}', "printable"),
    ],
)
def test_bodies_two_parsers_could_read_differently_are_refused(gateway: str, ollama_fake: Fake, keys: Keys,
                                                               raw: bytes, why: str) -> None:  # fmt: skip
    r = httpx.post(gateway + "/api/chat", content=raw, headers={"Authorization": f"Bearer {keys.bob}"})
    assert r.status_code == 400, r.text
    assert why in r.json()["error"]
    assert ollama_fake.rec.requests == []


MANAGE = [
    ("/api/copy", {"source": ALLOWED, "destination": "mine:copy", "SOURCE": FORBIDDEN}),
    ("/api/copy", {"source": FORBIDDEN, "destination": "mine:copy"}),
    ("/api/copy", {"source": ALLOWED, "destination": FORBIDDEN}),
    ("/api/create", {"model": "mine:new", "from": FORBIDDEN}),
    ("/api/create", {"model": "mine:new", "from": ALLOWED, "FROM": FORBIDDEN}),
    ("/api/pull", {"model": FORBIDDEN}),
    ("/api/pull", {"name": FORBIDDEN}),
    ("/api/push", {"model": FORBIDDEN}),
]


@pytest.fixture(scope="module")
def scoped_admin(gateway_home: Path) -> str:
    """An admin key that may manage only fake:small and the mine:* models."""
    return KeyStore(open_database(gateway_home)).create("ops", [ALLOWED, "mine"], admin=True)[1]


@pytest.mark.parametrize(("path", "body"), MANAGE)
def test_an_admin_key_manages_only_its_own_models(gateway: str, ollama_fake: Fake, scoped_admin: str, path: str,
                                                  body: dict[str, str]) -> None:  # fmt: skip
    r = httpx.post(gateway + path, json=body, headers={"Authorization": f"Bearer {scoped_admin}"})
    assert r.status_code in (400, 403), r.text
    assert ollama_fake.rec.requests == []


def test_delete_outside_the_allowlist_is_refused_and_inside_it_works(gateway: str, ollama_fake: Fake,
                                                                     scoped_admin: str) -> None:  # fmt: skip
    auth = {"Authorization": f"Bearer {scoped_admin}"}
    assert httpx.request("DELETE", gateway + "/api/delete", json={"model": FORBIDDEN}, headers=auth).status_code == 403
    assert httpx.request("DELETE", gateway + "/api/delete", json={"model": "mine:new"}, headers=auth).status_code == 200
    ok = httpx.post(gateway + "/api/copy", json={"source": ALLOWED, "destination": "mine:copy"}, headers=auth)
    assert ok.status_code == 200 and ollama_fake.rec.ran[-1] == ("/api/copy", ALLOWED)

"""Backend errors as the gateway's own answers, in each front's shape: a client's mistake the backend
refuses stays a 4xx with a short message, a failing backend is 502, an unreachable one 502, a silent
one 504 -- never a repr, a traceback or the backend's echo of the request. Also: which API a
``--backend URL`` speaks (``detect_backend``)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.conftest import EngineGateway, Fake, Keys, run_gateway

from homellm.serve.backends import Backend, OllamaBackend, OpenAIBackend, detect_backend
from homellm.testing.fake_backend import free_port, serve_in_thread

PROMPT = [{"role": "user", "content": "hi"}]
# (front path, body): both fronts, streamed and not; over an Ollama backend both pass through, over an
# OpenAI-compatible one /api/chat is translated
REQUESTS = {
    "ollama-front": ("/api/chat", {"model": "fake:small", "messages": PROMPT, "stream": False}),
    "ollama-front-stream": ("/api/chat", {"model": "fake:small", "messages": PROMPT}),
    "openai-front": ("/v1/chat/completions", {"model": "fake:small", "messages": PROMPT}),
    "openai-front-stream": ("/v1/chat/completions", {"model": "fake:small", "messages": PROMPT, "stream": True}),
}
TRACEBACK = (
    'Traceback (most recent call last):\n  File "/srv/llm/app.py", line 88, in chat\n'
    "    out = model(prompt)\nValueError: the prompt does not fit\n"
)


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class Refusing:
    """A model server that answers every generation request with one scripted answer, or with silence.

    It stands in for the error answers of real servers; the bodies are theirs: Ollama's
    ``{"error": "..."}``, llama-cpp-python's and vLLM's ``{"error": {"message", "type"}}`` (for a bad
    body llama-cpp-python sends 500 with ``str()`` of FastAPI's validation error), FastAPI's 422
    ``{"detail": [...]}`` that echoes the request as ``input``, a plain-text traceback (a FastAPI app
    in debug mode), a proxy's HTML page. Model listings answer normally, so that the gateway's own
    checks pass and the request is sent.
    """

    answer: Answer | None = None  # None: accept the request, then say nothing until the gateway hangs up
    hung_up: threading.Event = field(default_factory=threading.Event)
    generations: int = 0

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "fake:small", "object": "model"}]})

        async def generate(request: Request) -> Response:
            await request.body()
            self.generations += 1
            if self.answer is None:
                while not await request.is_disconnected():
                    await asyncio.sleep(0.05)
                self.hung_up.set()
                return Response(status_code=500)
            return Response(self.answer.body, self.answer.status, media_type=self.answer.content_type)

        return Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/api/{op}", generate, methods=["POST"]),
                Route("/v1/{op:path}", generate, methods=["POST"]),
            ]
        )


@pytest.fixture(scope="module")
def refusing() -> Iterator[tuple[Refusing, str]]:
    backend = Refusing()
    with serve_in_thread(backend.app()) as url:
        yield backend, url


@pytest.fixture(scope="module", params=["ollama", "openai"])
def gateway(request: pytest.FixtureRequest, refusing: tuple[Refusing, str], gateway_home: Path) -> Iterator[str]:
    """The gateway in front of the refusing server, speaking Ollama's API or the OpenAI API to it."""
    _, url = refusing
    backend: Backend = OllamaBackend(url, idle_timeout=0.5) if request.param == "ollama" else OpenAIBackend(url, 0.5)
    with run_gateway(gateway_home, backend) as (gw_url, _):
        yield gw_url


def error_message(r: httpx.Response, front: str) -> str:
    """The error's message, after checking that the answer has the front's error shape."""
    data = r.json()
    assert set(data) == {"error"}, data
    if front == "openai":
        err = data["error"]
        assert set(err) == {"message", "type", "code"}, err
        assert err["type"] == ("invalid_request_error" if r.status_code < 500 else "server_error")
        message = err["message"]
    else:
        message = data["error"]
    assert isinstance(message, str) and message
    return message


def assert_short_and_clean(message: str) -> None:
    assert len(message) <= 400 and "\n" not in message, message
    for leak in ("Traceback", 'File "', "{'", "('body'", "[{", "s3cret"):
        assert leak not in message, message


# FastAPI's 422 echoes the request as "input"; llama-cpp-python turns the same error into a 500
# whose message is str() of FastAPI's exception: a Python repr
FIELD_REQUIRED = {"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}
FASTAPI_422 = {"detail": [{**FIELD_REQUIRED, "input": {"model": "fake:small", "note": "s3cret"}}]}
LLAMA_CPP_PYTHON_500 = {
    "error": {
        "message": "1 validation error:\n  {'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required',"
        " 'input': {'note': 's3cret'}}",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}
CASES = {
    "ollama-400": (Answer(400, b'{"error":"invalid value for option num_ctx"}'), 400, "num_ctx"),
    "ollama-404": (
        Answer(404, b'{"error":"model \\"fake:small\\" not found, try pulling it first"}'),
        404,
        "not found",
    ),
    "fastapi-413": (Answer(413, b'{"detail":"Request Entity Too Large"}'), 413, "Too Large"),
    "fastapi-422": (Answer(422, json.dumps(FASTAPI_422).encode()), 400, "messages: Field required"),
    "openai-500": (Answer(500, b'{"error":{"message":"the model crashed","type":"server_error"}}'), 502, "crashed"),
    "llama-cpp-python-validation-500": (Answer(500, json.dumps(LLAMA_CPP_PYTHON_500).encode()), 502, ""),
    "traceback-500": (Answer(500, TRACEBACK.encode(), "text/plain"), 502, ""),
    "proxy-html-502": (Answer(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"), 502, ""),
}


@pytest.mark.parametrize("request_kind", REQUESTS)
@pytest.mark.parametrize("case", CASES)
def test_backend_errors_are_mapped_in_the_fronts_shape(
    gateway: str, refusing: tuple[Refusing, str], keys: Keys, case: str, request_kind: str
) -> None:
    backend, _ = refusing
    answer, status, words = CASES[case]
    backend.answer = answer
    path, body = REQUESTS[request_kind]
    before = backend.generations
    r = httpx.post(gateway + path, json=body, headers={"Authorization": f"Bearer {keys.bob}"}, timeout=60)
    assert backend.generations == before + 1  # the backend was asked, and this is its answer mapped
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = error_message(r, "openai" if path.startswith("/v1/") else "ollama")
    assert words in message
    assert_short_and_clean(message)


@pytest.mark.parametrize("request_kind", REQUESTS)
def test_a_silent_backend_is_504(gateway: str, refusing: tuple[Refusing, str], keys: Keys, request_kind: str) -> None:
    """The backend takes the request and sends nothing, not even headers: 504 after the idle timeout
    (0.5 s here), and the gateway hangs up on it."""
    backend, _ = refusing
    backend.answer = None
    backend.hung_up.clear()
    path, body = REQUESTS[request_kind]
    r = httpx.post(gateway + path, json=body, headers={"Authorization": f"Bearer {keys.bob}"}, timeout=60)
    assert r.status_code == 504, r.text
    message = error_message(r, "openai" if path.startswith("/v1/") else "ollama")
    assert "went silent" in message
    assert backend.hung_up.wait(30), "the gateway kept the silent request open"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
@pytest.mark.parametrize("request_kind", REQUESTS)
def test_an_unreachable_backend_is_502(gateway_home: Path, keys: Keys, kind: str, request_kind: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    backend: Backend = OllamaBackend(closed) if kind == "ollama" else OpenAIBackend(closed)
    path, body = REQUESTS[request_kind]
    with run_gateway(gateway_home, backend) as (url, _):
        r = httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {keys.bob}"}, timeout=60)
    assert r.status_code == 502, r.text
    message = error_message(r, "openai" if path.startswith("/v1/") else "ollama")
    assert "not reachable" in message and closed in message
    assert_short_and_clean(message)


def test_an_unknown_model_on_an_openai_backend_is_404_naming_only_allowed_models(
    openai_gateway: str, openai_fake: Fake, keys: Keys
) -> None:
    """llama-cpp-python answers any model name with its default model: the gateway checks names itself."""
    r = httpx.post(openai_gateway + "/api/chat", json={"model": "smollm2", "messages": PROMPT},
                   headers={"Authorization": f"Bearer {keys.alice}"})  # fmt: skip
    assert r.status_code == 404 and r.json()["error"] == "model 'smollm2' not found; you may use: fake:small"
    assert [s.path for s in openai_fake.rec.requests] == ["/v1/models", "/v1/models"]  # listed, never generated


# ---- which API a --backend URL speaks ------------------------------------------------------------


def _detect(url: str) -> Backend:
    return asyncio.run(detect_backend(url, 42.0))


def test_ollama_is_detected_by_its_version_endpoint(ollama_fake: Fake) -> None:
    backend = _detect(ollama_fake.url)
    assert type(backend) is OllamaBackend and backend.kind == "ollama"
    assert backend.base_url == ollama_fake.url and backend.idle_timeout == 42.0
    assert [(s.method, s.path) for s in ollama_fake.rec.requests] == [("GET", "/api/version")]
    # as a user types it: no scheme, a trailing slash
    bare = _detect(ollama_fake.url.removeprefix("http://") + "/")
    assert type(bare) is OllamaBackend and bare.base_url == ollama_fake.url


def test_a_server_without_ollamas_version_endpoint_is_openai_compatible(openai_fake: Fake) -> None:
    backend = _detect(openai_fake.url)
    assert type(backend) is OpenAIBackend and backend.kind == "openai" and backend.base_url == openai_fake.url
    assert [(s.method, s.path) for s in openai_fake.rec.requests] == [("GET", "/api/version")]  # answered 404


@pytest.mark.parametrize(
    "answer",
    [Answer(200, b"<html>LM Studio</html>", "text/html"), Answer(200, b'{"name": "vllm"}'), Answer(500, b"{}")],
    ids=["html", "json-without-version", "error"],
)
def test_a_version_endpoint_that_is_not_ollamas_means_openai_compatible(answer: Answer) -> None:
    async def version(request: Request) -> Response:
        return Response(answer.body, answer.status, media_type=answer.content_type)

    with serve_in_thread(Starlette(routes=[Route("/api/version", version)])) as url:
        assert type(_detect(url)) is OpenAIBackend


def test_an_unreachable_url_is_taken_as_openai_compatible_and_reported_when_used(
    gateway_home: Path, keys: Keys
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = _detect(url)
    assert type(backend) is OpenAIBackend and backend.base_url == url
    with run_gateway(gateway_home, backend) as (gw, _):
        r = httpx.post(gw + "/v1/chat/completions", json=REQUESTS["openai-front"][1],
                       headers={"Authorization": f"Bearer {keys.bob}"})  # fmt: skip
    assert r.status_code == 502 and "not reachable" in r.json()["error"]["message"]


@pytest.mark.engine
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}),
        ("/v1/chat/completions", {"messages": PROMPT, "tools": [{"type": "function"}]}),
        ("/api/chat", {"messages": [{"role": "wizard", "content": "hi"}], "stream": False}),
    ],
    ids=["unknown-role", "content-not-text", "tool-without-function", "ollama-front-unknown-role"],
)
def test_the_engines_refusals_come_back_as_client_errors_without_a_repr(
    engine_gateway: EngineGateway, keys: Keys, path: str, body: dict[str, object]
) -> None:
    """The real llama-cpp-python server answers a body it cannot validate with 500 and ``str()`` of
    FastAPI's error: a Python repr that echoes the request, sometimes with a frame of its traceback.
    It is the client's mistake: a 400 with a short message."""
    with engine_gateway.client(keys.bob) as c:
        r = c.post(path, json={"model": "smollm2:135m", "max_tokens": 2, **body})
    assert r.status_code == 400, r.text
    assert_short_and_clean(error_message(r, "openai" if path.startswith("/v1/") else "ollama"))

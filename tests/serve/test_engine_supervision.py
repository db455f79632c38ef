"""The embedded engine is restarted when it crashes, and never outlives the gateway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from tests.conftest import homellm_exe

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.fake_backend import free_port

pytestmark = pytest.mark.engine


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_crashed_engine_is_restarted_and_dies_with_the_gateway(tmp_path: Path, smollm2: Path) -> None:
    key = KeyStore(open_database(tmp_path)).create("k")[1]
    port = free_port()
    env = dict(os.environ, HOMELLM_HOME=str(tmp_path), HOMELLM_ENGINE_CTX="1024")
    with (tmp_path / "serve.log").open("wb") as log:
        gateway = subprocess.Popen([homellm_exe(), "serve", "--model", str(smollm2), "--tls", "--port", str(port)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    cert = tmp_path / "tls" / "cert.pem"

    def client() -> httpx.Client:
        return httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(cert)),
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip

    def status() -> int:
        try:
            with client() as c:
                return c.post(
                    "/v1/completions", json={"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2}
                ).status_code
        except httpx.HTTPError:
            return 0

    def engines() -> list[psutil.Process]:
        """The gateway's living engine processes (a killed one is a zombie until the supervisor reaps it)."""
        found = []
        for p in psutil.Process(gateway.pid).children():
            with contextlib.suppress(psutil.Error):
                if "llama_cpp.server" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
        return found

    try:
        _wait(lambda: cert.exists() and status() == 200, 120, "the gateway")
        (engine,) = engines()
        engine_port = json.loads((tmp_path / "engine" / "engine.json").read_text())["port"]
        engine.send_signal(signal.SIGKILL)
        # Hold the restart: the supervisor notices the exit, waits its backoff and starts a new engine,
        # which we stop before it can load the model. Until we let it go, the gateway must say 503.
        _wait(lambda: [p for p in engines() if p.pid != engine.pid], 60, "the supervisor to start a new engine")
        (restarted,) = engines()
        restarted.suspend()
        assert not _listening(engine_port), "the new engine was ready before it could be held; retry"
        with client() as c:
            for path, body, message in [
                ("/v1/completions", {"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2},
                 lambda r: r.json()["error"]["message"]),
                ("/api/chat", {"model": "smollm2:135m", "messages": [], "stream": False}, lambda r: r.json()["error"]),
            ]:  # fmt: skip
                r = c.post(path, json=body)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "5" and "restarting" in message(r)
        restarted.resume()
        _wait(lambda: status() == 200, 120, "the restarted engine")
        assert [p.pid for p in engines()] == [restarted.pid]
        if sys.platform != "linux":
            return
        gateway.send_signal(signal.SIGKILL)  # no chance to clean up
        _wait(lambda: not restarted.is_running() or restarted.status() == psutil.STATUS_ZOMBIE, 15,
              "the engine to exit with its gateway")  # fmt: skip
    finally:
        for p in engines() if gateway.poll() is None else []:
            p.resume()
        if gateway.poll() is None:
            gateway.terminate()
            gateway.wait(30)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

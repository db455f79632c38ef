"""The embedded engine is restarted when it crashes, and never outlives the gateway."""

from __future__ import annotations

import os
import signal
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

    try:
        _wait(lambda: cert.exists() and status() == 200, 120, "the gateway")
        engine = next(p for p in psutil.Process(gateway.pid).children() if "llama_cpp.server" in " ".join(p.cmdline()))
        engine.send_signal(signal.SIGKILL)
        _wait(lambda: status() == 503, 10, "a 503 while the engine restarts")
        with client() as c:
            r = c.post("/api/chat", json={"model": "smollm2:135m", "messages": []})
            if r.status_code == 503:
                assert r.headers["retry-after"] and "restarting" in r.json()["error"]
        _wait(lambda: status() == 200, 120, "the restarted engine")
        restarted = next(
            p for p in psutil.Process(gateway.pid).children() if "llama_cpp.server" in " ".join(p.cmdline())
        )
        assert restarted.pid != engine.pid
        if sys.platform != "linux":
            return
        gateway.send_signal(signal.SIGKILL)  # no chance to clean up
        _wait(lambda: not restarted.is_running() or restarted.status() == psutil.STATUS_ZOMBIE, 15,
              "the engine to exit with its gateway")  # fmt: skip
    finally:
        if gateway.poll() is None:
            gateway.terminate()
            gateway.wait(30)

"""The pool with real processes on loopback: three scripted backends with their own model sets and
loaded models (``homellm.testing.scripted_backend``), plus the real llama.cpp engine as a fourth member,
behind one ``homellm serve`` over TLS.

    gpu   Ollama, priority 10   llama3:8b, qwen:7b   (loaded: nothing at first)
    mini  Ollama, priority 0    llama3:8b, tiny:1b   (loaded: llama3:8b)
    vllm  OpenAI, priority 0    qwen:7b              (an OpenAI server serves what it lists: loaded)
    engine (the real engine)    smollm2:135m

Which member answered is read from the scripted servers' own record of the generations they were
asked for (and from the usage log's ``backend`` column). No timing asserts: every wait is for an event
(a health state, a row), with a generous timeout.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.processes import GatewayProcess, ScriptedBackend, wait_for

pytestmark = pytest.mark.engine
EXE = str(Path(sys.executable).with_name("homellm"))
LOADED = {"gpu": [], "mini": ["llama3:8b"], "vllm": None}  # what each one's /api/ps lists at first
BREAKER_OPEN_S = 4.0  # long enough for the "while open" checks, short enough to wait for half-open


@dataclass
class Pool:
    gateway: GatewayProcess
    backends: dict[str, ScriptedBackend]
    admin: str
    user: str  # may use tiny:1b and smollm2 only
    tls: ssl.SSLContext

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.gateway.url, verify=self.tls, timeout=120,
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip

    def chat(self, model: str, tag: str, key: str | None = None) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": tag}], "stream": False}
        with self.client(key or self.admin) as c:
            return c.post("/api/chat", json=body)

    def health(self) -> dict[str, Any]:
        with self.client(self.admin) as c:
            data: dict[str, Any] = c.get("/homellm/health").json()
        return data

    def member(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(b for b in self.health()["backends"] if b["name"] == name)
        return found

    def wait_member(self, name: str, what: str, check: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def ok() -> bool:
            nonlocal seen
            seen = self.member(name)
            return bool(check(seen))

        wait_for(ok, 30, f"{name}: {what}", self.gateway)
        return seen

    def served_by(self, tag: str) -> list[str]:
        """The scripted members (those running) that were asked for the generation tagged ``tag``."""
        return [n for n, b in self.backends.items() if b.alive() and any(a["tag"] == tag for a in b.arrivals())]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> Iterator[Pool]:
    root = tmp_path_factory.mktemp("pool")
    backends = {
        "gpu": ScriptedBackend(root / "gpu.log", models=["llama3:8b", "qwen:7b"], loaded=LOADED["gpu"]),
        "mini": ScriptedBackend(root / "mini.log", models=["llama3:8b", "tiny:1b"], loaded=LOADED["mini"]),
        "vllm": ScriptedBackend(root / "vllm.log", kind="openai", models=["qwen:7b"]),
    }
    home = root / "home"
    store = KeyStore(open_database(home))
    admin = store.create("admin", admin=True)[1]
    user = store.create("user", ["tiny:1b", "smollm2"])[1]
    tables = "".join(
        f'[[backends]]\nname = "{name}"\nurl = "{b.url}"\npriority = {10 if name == "gpu" else 0}\n\n'
        for name, b in backends.items()
    )
    (home / "config.toml").write_text(tables)
    gateway = GatewayProcess(home, model=smollm2, tls=True, ready_timeout=180, engine_ctx=2048,
                             health_interval_s=0.25, breaker_open_s=BREAKER_OPEN_S, requests_per_minute=0)  # fmt: skip
    try:
        yield Pool(gateway, backends, admin, user, ssl.create_default_context(cafile=str(gateway.cert)))
    finally:
        gateway.stop()
        for b in backends.values():
            b.stop()


def _first_state(first: list[str] | None, m: dict[str, Any]) -> bool:
    return bool(m["state"] == "up" and (first is None or m["loaded"] == first))


@pytest.fixture
def fresh(pool: Pool) -> Pool:
    """Every scripted member running, answering, with its first loaded set; the circuit closed."""
    for name, b in pool.backends.items():
        if not b.alive():
            b.popen = b._spawn()
            b.wait_ready()
        b.script(status=None, paused=False, loaded=LOADED[name])
    for name in pool.backends:
        pool.wait_member(name, "up, closed, with its first loaded set", functools.partial(_first_state, LOADED[name]))
    return pool


def test_the_union_of_models_filtered_by_the_keys_allowlist(fresh: Pool) -> None:
    every = ["llama3:8b", "qwen:7b", "smollm2:135m", "tiny:1b"]
    with fresh.client(fresh.admin) as c:
        assert sorted(m["name"] for m in c.get("/api/tags").json()["models"]) == every
        assert sorted(m["id"] for m in c.get("/v1/models").json()["data"]) == every
        loaded = sorted(m["name"] for m in c.get("/api/ps").json()["models"])
    assert loaded == ["llama3:8b", "qwen:7b", "smollm2:135m"]  # mini's llama3, vllm's qwen, the engine's own
    with fresh.client(fresh.user) as c:
        assert sorted(m["name"] for m in c.get("/api/tags").json()["models"]) == ["smollm2:135m", "tiny:1b"]
        assert sorted(m["id"] for m in c.get("/v1/models").json()["data"]) == ["smollm2:135m", "tiny:1b"]
        assert [m["name"] for m in c.get("/api/ps").json()["models"]] == ["smollm2:135m"]
        assert c.get("/v1/models/qwen:7b").status_code == 403  # outside its allowlist
        assert c.get("/v1/models/tiny:1b").status_code == 200
        health = c.get("/homellm/health").json()
    # a non-admin key learns that the pool answers and how many of its models it has: no addresses, no names
    assert health == {"backend": "ok", "describe": "a pool of 4 backends, 4 up", "models": 2, "waiting": 0}
    assert "127.0.0.1" not in json.dumps(health)
    admin_view = fresh.health()["backends"]
    assert [b["name"] for b in admin_view] == ["gpu", "mini", "vllm", "engine"]
    assert all(b["url"].startswith("http://127.0.0.1:") for b in admin_view)


def test_warm_first_then_the_priority_tier(fresh: Pool) -> None:
    # llama3:8b is on gpu (priority 10, not loaded) and mini (priority 0, loaded): the warm one wins
    assert fresh.chat("llama3:8b", "warm-1").status_code == 200
    assert fresh.served_by("warm-1") == ["mini"]
    # qwen:7b: gpu has it cold, vllm (an OpenAI server) serves it loaded
    assert fresh.chat("qwen:7b", "warm-2").status_code == 200
    assert fresh.served_by("warm-2") == ["vllm"]
    # gpu loads llama3:8b (its /api/ps says so): both warm now, and the higher tier wins
    fresh.backends["gpu"].script(loaded=["llama3:8b"])
    fresh.wait_member("gpu", "llama3:8b loaded", lambda m: "llama3:8b" in m["loaded"])
    assert fresh.chat("llama3:8b", "warm-3").status_code == 200
    assert fresh.served_by("warm-3") == ["gpu"]
    # a model only one member has goes there; an unknown one is 404
    assert fresh.chat("tiny:1b", "warm-4", fresh.user).status_code == 200
    assert fresh.served_by("warm-4") == ["mini"]
    assert fresh.chat("nosuch:1b", "warm-5").status_code == 404
    rows = fresh.gateway.wait_usage("route = '/api/chat' AND status = 200", count=4)
    assert [r["backend"] for r in rows][-4:] == ["mini", "vllm", "gpu", "mini"]


def test_the_engine_is_the_fourth_member(fresh: Pool) -> None:
    """The official clients, streamed and whole, on the real engine inside the pool."""
    code = (
        "import ollama, openai, ssl, httpx, sys\n"
        "url, key, cert = sys.argv[1:4]\n"
        "tls = ssl.create_default_context(cafile=cert)\n"
        "c = ollama.Client(host=url, headers={'Authorization': f'Bearer {key}'}, verify=tls)\n"
        "parts = list(c.chat(model='smollm2:135m', messages=[{'role': 'user', 'content': 'engine-1'}],"
        " stream=True, options={'num_predict': 4}))\n"
        "print('OLLAMA', len(parts) > 1, parts[-1].done)\n"
        "o = openai.OpenAI(base_url=url + '/v1', api_key=key, http_client=httpx.Client(verify=tls))\n"
        "r = o.chat.completions.create(model='smollm2:135m', messages=[{'role': 'user', 'content': 'hi'}],"
        " max_tokens=4)\n"
        "print('OPENAI', bool(r.choices[0].message.content), r.usage.completion_tokens)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, fresh.gateway.url, fresh.user, str(fresh.gateway.cert)],
                       capture_output=True, text=True, timeout=180)  # fmt: skip
    assert "OLLAMA True True" in r.stdout and "OPENAI True" in r.stdout, r.stdout + r.stderr
    rows = fresh.gateway.wait_usage("model = 'smollm2:135m' AND status = 200", count=2)
    assert {r["backend"] for r in rows} == {"engine"}
    assert fresh.served_by("engine-1") == []  # no scripted member saw it


def test_failover_when_the_primary_is_killed_and_recovery_when_it_returns(fresh: Pool) -> None:
    gpu, mini = fresh.backends["gpu"], fresh.backends["mini"]
    gpu.script(loaded=["llama3:8b"])
    fresh.wait_member("gpu", "llama3:8b loaded", lambda m: "llama3:8b" in m["loaded"])
    assert fresh.chat("llama3:8b", "fail-1").status_code == 200
    assert fresh.served_by("fail-1") == ["gpu"]
    gpu.kill()
    # the very next request is answered: refused by gpu, retried on mini before any byte reached the client
    r = fresh.chat("llama3:8b", "fail-2")
    assert r.status_code == 200 and r.json()["message"]["content"].startswith("tok0")
    assert fresh.served_by("fail-2") == ["mini"]
    down = fresh.wait_member("gpu", "down", lambda m: m["state"] == "down")
    assert "not reachable" in down["detail"]
    for i in range(3):
        assert fresh.chat("llama3:8b", f"fail-3-{i}").status_code == 200
        assert fresh.served_by(f"fail-3-{i}") == ["mini"]
    # gpu comes back on its port; the health check finds it, and the higher tier is used again
    gpu.popen = gpu._spawn()
    gpu.wait_ready()
    gpu.script(loaded=["llama3:8b"])
    fresh.wait_member("gpu", "up again", lambda m: m["state"] == "up" and "llama3:8b" in m["loaded"])
    assert fresh.chat("llama3:8b", "fail-4").status_code == 200
    assert fresh.served_by("fail-4") == ["gpu"]
    assert mini.alive()


def test_the_circuit_breaker(fresh: Pool) -> None:
    gpu, mini = fresh.backends["gpu"], fresh.backends["mini"]
    gpu.script(loaded=["llama3:8b"])
    fresh.wait_member("gpu", "llama3:8b loaded", lambda m: "llama3:8b" in m["loaded"])
    failed_before = fresh.member("gpu")["failures"]
    gpu.script(status=503)  # its health checks pass; its generations fail ("server busy")
    for i in range(3):
        fresh.wait_member("gpu", "up (its health check passed)", lambda m: m["state"] == "up")
        r = fresh.chat("llama3:8b", f"cb-{i}")
        assert r.status_code == 200  # each failure was retried on mini
        assert fresh.served_by(f"cb-{i}") == ["gpu", "mini"]
    opened = fresh.wait_member("gpu", "open", lambda m: m["breaker"] == "open")
    assert opened["failures"] == failed_before + 3 and opened["reopens_in_s"] > 0
    # while open, gpu gets nothing, though its health checks pass and it is the higher tier
    asked = len(gpu.arrivals())
    for i in range(3):
        assert fresh.chat("llama3:8b", f"cb-open-{i}").status_code == 200
    assert len(gpu.arrivals()) == asked
    # half-open: one probe decides. It fails: open again, and the client still gets mini's answer
    fresh.wait_member("gpu", "half-open", lambda m: m["state"] == "half-open")
    assert fresh.chat("llama3:8b", "cb-probe-1").status_code == 200
    assert fresh.served_by("cb-probe-1") == ["gpu", "mini"]
    assert fresh.member("gpu")["breaker"] == "open"
    # it recovers; at the next half-open, exactly one probe goes to gpu while others go to mini (the probe
    # is a whole answer held at gpu: undecided until it comes)
    gpu.script(status=None, paused=True)
    fresh.wait_member("gpu", "half-open", lambda m: m["state"] == "half-open")
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(fresh.chat, "llama3:8b", "cb-probe-2")
        wait_for(lambda: fresh.served_by("cb-probe-2") == ["gpu"], 30, "the probe at gpu")
        assert fresh.chat("llama3:8b", "cb-during-probe").status_code == 200
        assert fresh.served_by("cb-during-probe") == ["mini"]
        gpu.script(paused=False)
        assert probe.result(60).status_code == 200
    closed = fresh.wait_member("gpu", "closed", lambda m: m["breaker"] == "closed")
    assert closed["state"] == "up"
    assert fresh.chat("llama3:8b", "cb-after").status_code == 200
    assert fresh.served_by("cb-after") == ["gpu"]
    assert mini.alive()


def test_ping_shows_each_backend(fresh: Pool, tmp_path: Path) -> None:
    """`homellm ping` with an admin key lists each member's state; a down one is shown, not fatal."""
    laptop = {"HOMELLM_HOME": str(tmp_path / "laptop"), "COLUMNS": "200"}
    from homellm.serve.tls import fingerprint_of_pem

    fp = fingerprint_of_pem(fresh.gateway.cert.read_bytes())
    env = {**os.environ, **laptop}
    r = subprocess.run([EXE, "connect", fresh.gateway.url, "--key-stdin", "--fingerprint", fp, "--name", "main"],
                       input=fresh.admin, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    fresh.backends["vllm"].kill()
    fresh.wait_member("vllm", "down", lambda m: m["state"] == "down")
    ping = subprocess.run([EXE, "ping"], capture_output=True, text=True, env=env, timeout=60)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "ok   backend: a pool of 4 backends, 3 up" in ping.stdout
    for name in ("gpu", "mini", "engine"):
        assert f"ok   backend {name}: up" in ping.stdout
    assert "warn backend vllm: down" in ping.stdout and "not reachable" in ping.stdout

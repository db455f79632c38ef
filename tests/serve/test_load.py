"""Load with real processes on loopback: a short soak (no errors, no descriptor growth) and a
bounded fuzz over every route of both APIs. The long runs are benchmarks/soak.py and
benchmarks/fuzz.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing import hostile
from homellm.testing.load import run_load
from homellm.testing.processes import GatewayProcess, ScriptedBackend

UNLIMITED: dict[str, Any] = {"requests_per_minute": 0, "max_streams_per_key": 0}


def _user_key(home: Path) -> str:
    return KeyStore(open_database(home)).create("user")[1]


# ---- soak ----------------------------------------------------------------------------------


def _load(gateway: GatewayProcess, key: str, seconds: float, prefix: str) -> list[str]:
    end = time.monotonic() + seconds
    outcomes = asyncio.run(run_load(gateway.url, key, 16, lambda: time.monotonic() > end, prefix=prefix))
    assert len(outcomes) > 16, "the load generator sent almost nothing"
    return [f"{o.kind} {o.tag}: {o.error}" for o in outcomes if not o.ok]


def test_short_soak_has_no_errors_and_no_descriptor_growth(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = _user_key(home)
    with (
        ScriptedBackend(tmp_path / "backend.log") as backend,
        GatewayProcess(home, backend=backend.url, **UNLIMITED) as gateway,
    ):
        assert _load(gateway, key, 5, "warm") == []
        gateway.wait_settled()
        warm = gateway.descriptors(backend.port)
        assert _load(gateway, key, 20, "soak") == []
        gateway.wait_settled()
        end = gateway.descriptors(backend.port)
    assert end.own <= warm.own, f"descriptors grew: {warm} -> {end}"
    assert end.upstream <= 32, f"the backend pool keeps {end.upstream} connections for 16 clients"


# ---- fuzz ----------------------------------------------------------------------------------


@dataclass
class FuzzTarget:
    gateway: GatewayProcess
    kind: str
    key: str

    def host(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


@pytest.fixture(scope="module")
def fuzz_targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FuzzTarget]]:
    """Gateways in front of an Ollama and an OpenAI-compatible scripted backend (short body and
    header timers, so that a request that lies about its length ends quickly with a 408)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    targets: dict[str, FuzzTarget] = {}
    procs: list[ScriptedBackend | GatewayProcess] = []
    try:
        for kind in ("ollama", "openai"):
            home = tmp / kind
            key = _user_key(home)
            backend = ScriptedBackend(tmp / f"{kind}-backend.log", kind=kind)
            procs.append(backend)
            gateway = GatewayProcess(home, backend=backend.url, header_timeout_s=2, body_timeout_s=2, **UNLIMITED)
            procs.append(gateway)
            targets[kind] = FuzzTarget(gateway, kind, key)
        yield targets
    finally:
        for p in reversed(procs):
            p.stop()


def _no_traceback_logged(gateway: GatewayProcess) -> None:
    log = gateway.log.read_text(errors="replace")
    for mark in ("Traceback", "Exception in ASGI", "internal error on"):
        assert mark not in log, f"the gateway logged {mark!r}:\n{log[-3000:]}"


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=hostile.requests(), kind=st.sampled_from(["ollama", "openai"]))
def test_fuzz_every_route_with_hostile_requests(
    fuzz_targets: dict[str, FuzzTarget], request: hostile.HostileRequest, kind: str
) -> None:
    target = fuzz_targets[kind]
    answer = hostile.send("127.0.0.1", target.gateway.port, request.render(target.host(), target.key))
    problem = hostile.verdict(request, answer, kind)
    assert problem is None, f"{request.method} {request.path!r} {request.headers!r} {request.body[:200]!r}: {problem}"
    _no_traceback_logged(target.gateway)

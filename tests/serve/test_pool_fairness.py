"""Fair queueing with real processes: one scripted backend that runs one request at a time
(``max_concurrency = 1``), a heavy key with 200 requests queued, a light key sending one at a time.

The measure is the one the guarantee is about: how many requests the backend started between a light
request being sent and the light request starting there (its wait, in service times). It is read from
the backend's own record of the generations it was asked for, in order, and from the usage log's
``queue_position``. With fair queueing each light request waits for at most the one request already
running; first come, first served makes it wait for every heavy request queued before it. No timing
asserts: the flood is held at the backend (paused) until it is queued, and every wait is for an event.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.processes import GatewayProcess, ScriptedBackend, wait_for

HEAVY = 200
LIGHT = 20


@dataclass
class Setup:
    gateway: GatewayProcess
    backend: ScriptedBackend
    keys: dict[str, str]

    def waiting(self) -> int:
        r = httpx.get(self.gateway.url + "/homellm/health", headers=_bearer(self.keys["admin"]), timeout=30)
        return int(r.json()["waiting"])


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _setup(root: Path, fair: bool, queue_per_key: int) -> Iterator[Setup]:
    backend = ScriptedBackend(root / "backend.log", models=["llama3:8b"], tokens=2, delay=0.005)
    home = root / "home"
    store = KeyStore(open_database(home))
    keys = {name: store.create(name, admin=name == "admin")[1] for name in ("admin", "heavy", "light")}
    (home / "config.toml").write_text(f'[[backends]]\nname = "solo"\nurl = "{backend.url}"\nmax_concurrency = 1\n')
    gateway = GatewayProcess(home, requests_per_minute=0, max_streams_per_key=0, max_connections_per_ip=0,
                             fair_queueing=fair, queue_per_key=queue_per_key, health_interval_s=0.5)  # fmt: skip
    try:
        yield Setup(gateway, backend, keys)
    finally:
        gateway.stop()
        backend.stop()


@pytest.fixture
def fair(tmp_path: Path) -> Iterator[Setup]:
    yield from _setup(tmp_path, True, 256)


@pytest.fixture
def first_come(tmp_path: Path) -> Iterator[Setup]:
    yield from _setup(tmp_path, False, 150)


def _body(tag: str) -> dict[str, object]:
    return {"model": "llama3:8b", "messages": [{"role": "user", "content": tag}], "stream": False}


async def _flood(s: Setup, client: httpx.AsyncClient) -> list[asyncio.Task[httpx.Response]]:
    """The heavy key's 200 requests, held at the backend until they are all in the gateway."""
    s.backend.script(paused=True)
    headers = _bearer(s.keys["heavy"])
    return [asyncio.create_task(client.post("/api/chat", json=_body(f"heavy-{i}"), headers=headers))
            for i in range(HEAVY)]  # fmt: skip


async def _light(s: Setup, client: httpx.AsyncClient, tag: str) -> int:
    """Send one light request; the requests the backend started between its sending and its start."""
    before = await asyncio.to_thread(s.backend.count)
    r = await client.post("/api/chat", json=_body(tag), headers=_bearer(s.keys["light"]))
    assert r.status_code == 200, r.text
    tags = [a["tag"] for a in await asyncio.to_thread(s.backend.arrivals, before)]
    return tags.index(tag)


def test_a_light_key_waits_one_service_time_behind_a_heavy_keys_200(fair: Setup) -> None:
    async def run() -> tuple[list[int], list[httpx.Response]]:
        limits = httpx.Limits(max_connections=HEAVY + 10)
        async with httpx.AsyncClient(base_url=fair.gateway.url, timeout=300, limits=limits) as client:
            heavy = await _flood(fair, client)
            await asyncio.to_thread(wait_for, lambda: fair.waiting() == HEAVY - 1, 60, "the flood queued")
            fair.backend.script(paused=False)
            ahead = [await _light(fair, client, f"light-{i}") for i in range(LIGHT)]
            left = fair.waiting()
            assert left > 0, "the flood must still be queued when the last light request goes"
            return ahead, list(await asyncio.gather(*heavy))

    ahead, heavy = asyncio.run(run())
    assert all(r.status_code == 200 for r in heavy)
    # the gateway's count: requests the queue served before each light request while it waited
    rows = fair.gateway.wait_usage("key_name = 'light'", count=LIGHT)
    served_ahead = [r["queue_position"] or 0 for r in rows]
    p95 = sorted(served_ahead)[int(0.95 * (len(served_ahead) - 1))]
    print(f"\n[fair] requests served ahead of each light request while it waited: {served_ahead} (p95 {p95}); "
          f"started at the backend after it was sent: {ahead}")  # fmt: skip
    assert p95 == 0 and max(served_ahead) == 0  # only the request already running when it came: one service time
    # the flood's own requests did wait for each other: the last of them had 198 go first
    heavy_rows = fair.gateway.wait_usage("key_name = 'heavy'", count=HEAVY)
    assert max(r["queue_position"] or 0 for r in heavy_rows) >= HEAVY - 2
    waited = [r["queue_ms"] for r in rows if r["queue_ms"] is not None]
    service = statistics.median(r["duration_ms"] - (r["queue_ms"] or 0) for r in rows)
    print(f"[fair] light waits (ms): p50 {statistics.median(waited or [0]):.1f}, max {max(waited or [0]):.1f}; "
          f"one service time ~{service:.1f} ms")  # fmt: skip


def test_first_come_first_served_makes_it_wait_for_the_whole_flood(first_come: Setup) -> None:
    """Fairness off, for comparison; and the per-key queue bound: beyond 150 waiting, 429 with Retry-After."""
    s = first_come

    async def run() -> tuple[int, list[httpx.Response]]:
        limits = httpx.Limits(max_connections=HEAVY + 10)
        async with httpx.AsyncClient(base_url=s.gateway.url, timeout=300, limits=limits) as client:
            heavy = await _flood(s, client)
            refused = [t for t in heavy if not t.done()]
            await asyncio.to_thread(wait_for, lambda: s.waiting() == 150, 60, "the queue full")
            await asyncio.to_thread(wait_for, lambda: sum(t.done() for t in heavy) == HEAVY - 151, 60, "the refusals")
            assert refused
            light = asyncio.create_task(_light(s, client, "light-0"))
            await asyncio.to_thread(wait_for, lambda: s.waiting() == 151, 60, "the light request queued")
            s.backend.script(paused=False)
            return await light, list(await asyncio.gather(*heavy))

    ahead, heavy = asyncio.run(run())
    over = [r for r in heavy if r.status_code == 429]
    assert len(over) == HEAVY - 151 and all(r.status_code == 200 for r in heavy if r not in over)
    assert all(int(r.headers["retry-after"]) >= 1 for r in over)
    assert "150 requests of this key are already waiting for a backend" in over[0].json()["error"]
    print(f"\n[first come] requests served ahead of the light request: {ahead}")
    assert ahead == 150  # every queued heavy request went first (the flood was held until the light one queued)
    (row,) = s.gateway.wait_usage("key_name = 'light'")
    assert row["queue_position"] == 150

"""The pool: fairness under a flood, failover time, and what routing costs per request.

    python benchmarks/pool.py [--heavy 200] [--light 20] [--seconds 8]

1. Fairness. One scripted backend that runs one request at a time (``max_concurrency = 1``), each
   request one service time long. A heavy key keeps 200 requests outstanding (closed loop: each answer
   is followed by a new request); a light key sends one request at a time. Its wait is the gateway's own
   ``queue_ms`` from the usage log, and also counted in requests: how many the queue served before it
   while it waited (the log's ``queue_position``). Once with fair queueing, once first come first served.
   Goal: the light key's p99 wait is at most one service time with fair queueing.
2. Failover. Two scripted backends with the model loaded, a primary (priority 10) and a backup; a
   client sends a request every 20 ms. The primary is killed (``kill -9``: a crash, its port refuses),
   or frozen (``SIGSTOP``: a machine that hangs, its port accepts and never answers). Measured: from the
   fault to the first answer from the backup to a request sent after the fault, and the requests that
   failed. Goal: under 2 s.
3. Routing cost. The Go synthetic backend behind the gateway alone (the single-backend fast path) and
   as a pool of two members (the router picks per request), wrk -c32 small non-streamed chats: CPU per
   request of the gateway process; and the router alone in-process (acquire + release per request).

Needs wrk and Go (Debian: wrk, golang-go) for part 3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from harness import SyntheticBackend, cpu_seconds, pin, wrk
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.processes import GatewayProcess, ScriptedBackend

CHAT = b'{"model":"fake:small","messages":[{"role":"user","content":"hi"}],"stream":false,"options":{"num_predict":1}}'
LOAD_CPU, PROXY_CPU = 0, 1


def _body(tag: str) -> dict[str, object]:
    return {"model": "llama3:8b", "messages": [{"role": "user", "content": tag}], "stream": False}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


@contextmanager
def _home(tmp: Path, name: str, config: str) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp / name
    store = KeyStore(open_database(home))
    keys = {k: store.create(k, admin=k == "admin")[1] for k in ("admin", "heavy", "light")}
    (home / "config.toml").write_text(config)
    yield home, keys


# ---- 1. fairness ----------------------------------------------------------------------------


@dataclass
class Fairness:
    mode: str
    service_ms: float
    waits_ms: list[float]
    ahead: list[int]  # requests served before each light one while it waited (the gateway's count)
    heavy_done: int


async def _flood_and_light(gateway: GatewayProcess, backend: ScriptedBackend, keys: dict[str, str], heavy: int,
                           light: int) -> tuple[list[int], int]:  # fmt: skip
    stop = asyncio.Event()
    done = 0
    limits = httpx.Limits(max_connections=heavy + 10, max_keepalive_connections=heavy + 10)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=600, limits=limits) as client:

        async def heavy_loop(i: int) -> None:
            nonlocal done
            n = 0
            while not stop.is_set():
                r = await client.post("/api/chat", json=_body(f"heavy-{i}-{n}"), headers=_bearer(keys["heavy"]))
                if r.status_code != 200:
                    raise RuntimeError(f"heavy request: HTTP {r.status_code}: {r.text[:200]}")
                done += 1
                n += 1

        async def waiting() -> int:
            r = await client.get("/homellm/health", headers=_bearer(keys["admin"]))
            return int(r.json()["waiting"])

        tasks = [asyncio.create_task(heavy_loop(i)) for i in range(heavy)]
        while await waiting() < heavy - 2:  # the flood is in: one running, the rest queued
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # and steady
        ahead = []
        for i in range(light):
            before = await asyncio.to_thread(backend.count)
            tag = f"light-{i}"
            r = await client.post("/api/chat", json=_body(tag), headers=_bearer(keys["light"]))
            if r.status_code != 200:
                raise RuntimeError(f"light request: HTTP {r.status_code}: {r.text[:200]}")
            tags = [a["tag"] for a in await asyncio.to_thread(backend.arrivals, before)]
            ahead.append(tags.index(tag))
        stop.set()
        await asyncio.gather(*tasks)
    return ahead, done


def fairness(tmp: Path, fair: bool, heavy: int, light: int) -> Fairness:
    mode = "fair queueing" if fair else "first come, first served"
    backend = ScriptedBackend(tmp / f"fair-{fair}.log", models=["llama3:8b"], tokens=4, delay=0.005)
    config = f'[[backends]]\nname = "solo"\nurl = "{backend.url}"\nmax_concurrency = 1\n'
    with (
        backend,
        _home(tmp, f"fair-{fair}", config) as (home, keys),
        GatewayProcess(home, requests_per_minute=0, max_streams_per_key=0, max_connections_per_ip=0,
                       fair_queueing=fair, queue_per_key=heavy + 10) as gateway,
    ):  # fmt: skip
        _sent_to_start, done = asyncio.run(_flood_and_light(gateway, backend, keys, heavy, light))
        gateway.stop()
        rows = gateway.usage("key_name IN ('heavy', 'light') AND status = 200")
    light_rows = [r for r in rows if r["key_name"] == "light"]
    # one service time: the time a request holds the backend's slot (all requests here are the same work);
    # the light requests' own, which no measurement window biases
    service = statistics.median(r["duration_ms"] - (r["queue_ms"] or 0) for r in light_rows)
    served_ahead = [r["queue_position"] or 0 for r in light_rows]
    return Fairness(mode, service, [r["queue_ms"] or 0.0 for r in light_rows], served_ahead, done)


# ---- 2. failover -------------------------------------------------------------------------------


@dataclass
class Failover:
    fault: str
    seconds: float  # from the fault to the first backup answer to a request sent after it
    failed: int
    sent: int
    slowest_s: float  # the longest any request sent after the fault took


def failover(tmp: Path, fault: str) -> Failover:
    primary = ScriptedBackend(tmp / f"primary-{fault}.log", models=["llama3:8b"], tokens=2, delay=0.002)
    backup = ScriptedBackend(tmp / f"backup-{fault}.log", models=["llama3:8b"], tokens=2, delay=0.002)
    config = (f'[[backends]]\nname = "primary"\nurl = "{primary.url}"\npriority = 10\n\n'
              f'[[backends]]\nname = "backup"\nurl = "{backup.url}"\n')  # fmt: skip
    with (
        backup,
        _home(tmp, f"failover-{fault}", config) as (home, keys),
        GatewayProcess(
            home, requests_per_minute=0, max_streams_per_key=0, max_connections_per_ip=0, idle_timeout_s=60
        ) as gateway,
    ):
        result = asyncio.run(_failover_run(gateway, primary, keys["light"], fault))
    primary.popen.send_signal(signal.SIGCONT)
    primary.stop()
    return result


async def _failover_run(gateway: GatewayProcess, primary: ScriptedBackend, key: str, fault: str) -> Failover:
    results: list[tuple[float, float, int]] = []  # (sent at, answered at, status)
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as client:

        async def one(i: int) -> None:
            sent = time.monotonic()
            try:
                r = await client.post("/api/chat", json=_body(f"f-{i}"), headers=_bearer(key))
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            results.append((sent, time.monotonic(), status))

        async def sender() -> None:
            i = 0
            tasks = []
            while not stop.is_set():
                tasks.append(asyncio.create_task(one(i)))
                i += 1
                await asyncio.sleep(0.02)
            await asyncio.gather(*tasks)

        running = asyncio.create_task(sender())
        await asyncio.sleep(1.0)  # steady state on the primary
        at = time.monotonic()
        if fault == "kill -9":
            primary.popen.send_signal(signal.SIGKILL)
        else:
            primary.popen.send_signal(signal.SIGSTOP)
        served = 0
        while served < 20:  # the backup answers requests sent after the fault
            await asyncio.sleep(0.05)
            served = sum(1 for s, _a, st in results if s > at and st == 200)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(running, 90) if fault == "kill -9" else await _settle(running)
    after = [(s, a, st) for s, a, st in results if s > at]
    first = min(a for s, a, st in after if st == 200)
    return Failover(fault, first - at, sum(1 for *_x, st in after if st != 200), len(after),
                    max(a - s for s, a, st in after if st == 200))  # fmt: skip


async def _settle(task: asyncio.Task[None]) -> None:
    """Requests stuck on a frozen backend wait for its idle timeout: do not wait for them here."""
    try:
        await asyncio.wait_for(asyncio.shield(task), 5)
    except TimeoutError:
        task.cancel()


# ---- 3. routing cost -----------------------------------------------------------------------------


@dataclass
class Cost:
    path: str
    rate: float
    cpu_us: float


def routing_cost(tmp: Path, seconds: float, rounds: int = 3) -> list[Cost]:
    """Both gateways up side by side; wrk runs alternate between them, ``rounds`` times (medians)."""
    pool_config = ('[[backends]]\nname = "a"\nurl = "{url}"\nkind = "ollama"\n\n'
                   '[[backends]]\nname = "b"\nurl = "{url}"\nkind = "ollama"\n')  # fmt: skip
    with (
        SyntheticBackend(tmp / "go.log", cpu=LOAD_CPU) as backend,
        _home(tmp, "cost-single", "") as (single_home, single_keys),
        _home(tmp, "cost-pool", pool_config.format(url=backend.url)) as (pool_home, pool_keys),
        GatewayProcess(single_home, backend=backend.url, cpu=PROXY_CPU, requests_per_minute=0,
                       max_streams_per_key=0) as single,
        GatewayProcess(pool_home, cpu=PROXY_CPU, requests_per_minute=0, max_streams_per_key=0) as pooled,
    ):  # fmt: skip
        paths = {"one backend (fast path)": (single, single_keys["light"]),
                 "pool of two (router)": (pooled, pool_keys["light"])}  # fmt: skip
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for gateway, key in paths.values():
            wrk(gateway.url, 32, 2, "/api/chat", CHAT, key, LOAD_CPU)
        for _ in range(rounds):
            for name, (gateway, key) in paths.items():
                before = cpu_seconds(gateway.pid)
                r = wrk(gateway.url, 32, seconds, "/api/chat", CHAT, key, LOAD_CPU)
                runs[name].append((r.rate, 1e6 * (cpu_seconds(gateway.pid) - before) / r.completed))
    return [Cost(name, statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for name, v in
            runs.items()]  # fmt: skip


def router_alone(n: int = 200_000) -> float:
    """µs per acquire + release on a router of three members, in-process (no I/O)."""
    from homellm.serve.backends import OllamaBackend
    from homellm.serve.router import Member, Router

    async def run() -> float:
        members = [Member(name, OllamaBackend(f"http://127.0.0.1:{9 + i}"), max_concurrency=64) for i, name in
                   enumerate(("a", "b", "c"))]  # fmt: skip
        for m in members:
            m.names = frozenset({"llama3:8b"})
            m.loaded = {"llama3:8b"}
        router = Router(members)
        start = time.perf_counter()
        for _ in range(n):
            lease = await router.acquire("llama3:8b", "key")
            lease.release()
        return (time.perf_counter() - start) / n * 1e6

    return asyncio.run(run())


# ---- report --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", type=int, default=200, help="the heavy key's outstanding requests")
    parser.add_argument("--light", type=int, default=20, help="light requests measured (fair queueing)")
    parser.add_argument("--light-fifo", type=int, default=5, help="light requests measured (first come)")
    parser.add_argument("--seconds", type=float, default=8, help="length of each wrk run")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: fairness, failover, cost")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    console = Console(width=140)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
                  f"{platform.python_version()}, load average {load}")  # fmt: skip
    ok = True
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if "fairness" not in skip:
            table = Table(title=f"Light key's wait under a heavy key's flood ({args.heavy} outstanding), one slot",
                          title_justify="left")  # fmt: skip
            for col in ("queueing", "service time", "light p50 wait", "light p99 wait", "p99 in service times",
                        "served ahead while waiting p50 / p99 / max", "samples"):  # fmt: skip
                table.add_column(col, justify="left" if col == "queueing" else "right")
            for fair, n in ((True, args.light), (False, args.light_fifo)):
                f = fairness(tmp, fair, args.heavy, n)
                p99 = _pct(f.waits_ms, 0.99)
                table.add_row(f.mode, f"{f.service_ms:.1f} ms", f"{statistics.median(f.waits_ms):.1f} ms",
                              f"{p99:.1f} ms", f"{p99 / f.service_ms:.2f}",
                              f"{statistics.median(f.ahead):.0f} / {_pct(f.ahead, 0.99)} / {max(f.ahead)}",
                              str(len(f.waits_ms)))  # fmt: skip
                if fair:
                    ok &= p99 <= f.service_ms and max(f.ahead) <= 1
            console.print(table)
            console.print("goal: with fair queueing the light key's p99 wait is at most one service time")
        if "failover" not in skip:
            table = Table(title="Failover: primary (priority 10) and backup, a request every 20 ms",
                          title_justify="left")  # fmt: skip
            for col in ("fault", "routed around after", "failed requests", "sent after the fault", "slowest answer"):
                table.add_column(col, justify="left" if col == "fault" else "right")
            for fault in ("kill -9", "SIGSTOP"):
                r = failover(tmp, fault)
                table.add_row(r.fault, f"{r.seconds * 1000:.0f} ms", str(r.failed), str(r.sent),
                              f"{r.slowest_s * 1000:.0f} ms")  # fmt: skip
                ok &= r.seconds < 2.0
            console.print(table)
            console.print("goal: under 2 s. A frozen backend is found by its health check (every 0.5 s, 1 s to "
                          "answer); the requests waiting on it are then cut and retried on the backup.")  # fmt: skip
        if "cost" not in skip:
            pin(LOAD_CPU)
            costs = routing_cost(tmp, args.seconds)
            table = Table(title="Routing cost: Go synthetic backend, wrk -c32, small non-streamed chats "
                                "(medians of 3 alternating runs)", title_justify="left")  # fmt: skip
            for col in ("gateway in front of", "req/s", "CPU µs/request"):
                table.add_column(col, justify="left" if col.startswith("gateway") else "right")
            for c in costs:
                table.add_row(c.path, f"{c.rate:,.0f}", f"{c.cpu_us:.0f}")
            console.print(table)
            alone = router_alone()
            console.print(f"added by routing: {costs[1].cpu_us - costs[0].cpu_us:+.0f} µs of CPU per request end to "
                          f"end; the router alone (acquire + release, three members): {alone:.2f} µs")  # fmt: skip
    console.print("[green]goals met[/]" if ok else "[red]a goal was missed[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the gateway costs: the Go synthetic backend called directly, through nginx and through
homellm, side by side in one run.

    python benchmarks/gateway_overhead.py [--seconds 10] [--profile] [--py-spy PATH]

Needs wrk, nginx and Go (Debian: wrk, nginx, golang-go); py-spy (pip install py-spy) for --profile.

One ``homellm serve`` process with everything on (keys, Host and IP guards, usage logging), only
the per-key rate and concurrency limits raised. The gateway and nginx (one worker) each get core 1;
the backend (Go, GOMAXPROCS=1), wrk and this script share core 0. Measured:

* c=32: wrk -t1 -c32, small non-streamed /api/chat requests (a Lua script POSTs the body with the key);
* c=1: wrk -t1 -c1; latency p50/p99 from wrk's histogram (microsecond resolution); "added" is
  homellm's (or nginx's) minus the direct backend's;
* relay: NDJSON records per second through one stream of 200,000 tokens, read by an aiohttp client;
* 500 concurrent streams x 200 chunks, from 11 source addresses (127.0.0.2-12, under the gateway's
  64 connections per address): the backend holds every stream after its first token until all 500
  are open, then each body must equal, byte for byte, the same stream fetched directly;
* usage rows: after the gateway stops (and flushes), its usage table must hold exactly one row per
  request sent to it (wrk's written requests, including those cut off when a run ends, plus ours).

Targets: c=32 >= 6,000 req/s and >= 15% of nginx; added latency at c=1 p50 <= 0.5 ms, p99 <= 2 ms;
relay >= 60,000 chunks/s; 500 x 200 streams byte-exact and in order; one usage row per request.
--profile samples the gateway with py-spy during a further c=32 run and prints its hotspots.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import RESULTS, SyntheticBackend, WrkResult, cpu_seconds, nginx, pin, wrk
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.fake_backend import free_port
from homellm.testing.processes import GatewayProcess, Process, accepts, wait_for
from homellm.testing.slow_clients import loopback_addresses

CHAT = json.dumps(
    {
        "model": "fake:small",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_predict": 1},
    }
).encode()
LOAD_CPU, PROXY_CPU = 0, 1


@dataclass
class PathResult:
    c32: WrkResult
    c1: WrkResult
    relay: float | None  # NDJSON chunks/s, median of three streams
    cpu_us: float  # CPU time the server (the proxy, or the backend when direct) spent per request at c=32
    core_share: float  # its CPU seconds per second of the c=32 run: below 1, other processes had its core


@contextmanager
def bare_proxy(backend_url: str, log: Path, cpu: int) -> Iterator[tuple[str, int]]:
    """benchmarks/bare_proxy.py: uvicorn + aiohttp with none of the gateway, for calibration."""
    port = free_port()
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("bare_proxy.py")),
        "--backend",
        backend_url,
        "--port",
        str(port),
    ]
    with Process(cmd, log, cpu=cpu) as proc:
        wait_for(lambda: accepts("127.0.0.1", port), 60, "the bare proxy", proc)
        yield f"http://127.0.0.1:{port}", proc.pid


@dataclass
class Sent:
    """Requests sent to the gateway, by phase (the usage table must match the total)."""

    phases: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))

    def add(self, phase: str, n: int) -> None:
        self.phases[phase] += n

    @property
    def total(self) -> int:
        return sum(self.phases.values())


def stream_body(tokens: int) -> bytes:
    return json.dumps(
        {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": tokens}}
    ).encode()


async def relay_rate(url: str, key: str | None, tokens: int) -> float:
    """NDJSON records per second through one stream, as the client receives them."""
    import aiohttp

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        start = time.perf_counter()
        lines = 0
        async with session.post(url + "/api/chat", data=stream_body(tokens), headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status}: {await resp.text()}")
            async for data in resp.content.iter_any():
                lines += data.count(b"\n")
        seconds = time.perf_counter() - start
    if lines != tokens + 1:
        raise RuntimeError(f"{url}: {lines} records for {tokens} tokens")
    return lines / seconds


@dataclass
class StreamsResult:
    streams: int
    exact: int
    errors: list[str]
    max_active: int
    seconds: float


async def many_streams(url: str, key: str, expected: bytes, streams: int, tokens: int) -> tuple[int, list[str], float]:
    """``streams`` concurrent streams spread over 127.0.0.2..12; (byte-exact bodies, errors, seconds)."""
    import aiohttp

    sources = loopback_addresses(2, 11)
    timeout = aiohttp.ClientTimeout(total=300)
    sessions = [
        aiohttp.ClientSession(
            url,
            connector=aiohttp.TCPConnector(limit=0, local_addr=(ip, 0)),
            timeout=timeout,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        for ip in sources
    ]
    errors: list[str] = []
    exact = 0
    body = stream_body(tokens)

    async def one(i: int) -> None:
        nonlocal exact
        try:
            async with sessions[i % len(sessions)].post("/api/chat", data=body) as resp:
                got = await resp.read()
                if resp.status != 200:
                    errors.append(f"stream {i}: HTTP {resp.status}: {got[:200]!r}")
                elif got == expected:
                    exact += 1
                else:
                    errors.append(f"stream {i}: {len(got)} bytes differ from the direct stream's {len(expected)}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append(f"stream {i}: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(streams)))
    finally:
        for s in sessions:
            await s.close()
    return exact, errors, time.perf_counter() - start


def streams_check(
    backend: SyntheticBackend, gateway: GatewayProcess, key: str, streams: int, tokens: int
) -> StreamsResult:
    import urllib.request

    req = urllib.request.Request(backend.url + "/api/chat", data=stream_body(tokens), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        expected = resp.read()
    backend.control(gather=streams, delay_us=0)
    try:
        exact, errors, seconds = asyncio.run(many_streams(gateway.url, key, expected, streams, tokens))
        max_active = backend.control()["max_active"]
    finally:
        backend.control(gather=0)
    return StreamsResult(streams, exact, errors, max_active, seconds)


# ---- profile ----------------------------------------------------------------------------------


def find_py_spy(given: str | None) -> str:
    for candidate in (given, shutil.which("py-spy"), str(Path(sysconfig.get_path("scripts")) / "py-spy")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("--profile needs py-spy: pip install py-spy (or pass --py-spy PATH)")


def hotspots(raw: Path, top: int = 12) -> tuple[int, list[tuple[str, int, int]]]:
    """(samples, [(function, self samples, inclusive samples)]) from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _sep, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return total, [(f, n, inclusive[f]) for f, n in own.most_common(top)]


def profile(py_spy: str, gateway: GatewayProcess, key: str, seconds: float, sent: Sent, console: Console) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"gateway-profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(gateway.pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--duration",
            str(int(seconds) + 1),
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # py-spy attaches
    result = wrk(gateway.url, 32, seconds, "/api/chat", CHAT, key, LOAD_CPU)
    sent.add("profile", result.written)
    _out, err = spy.communicate(timeout=120)
    if not raw.exists():
        console.print(f"[red]py-spy wrote no profile:[/] {err.decode(errors='replace')[-500:]}")
        return
    total, top = hotspots(raw)
    table = Table(
        title=f"Gateway hotspots under c=32 ({result.rate:,.0f} req/s while sampled; "
        f"{total} samples at 200 Hz, CPU-busy only; {raw.name})",
        title_justify="left",
    )
    for col in ("function (file:line)", "self %", "inclusive %"):
        table.add_column(col, justify="left" if col.startswith("function") else "right")
    for name, own, incl in top:
        table.add_row(name[:100], f"{100 * own / total:.1f}", f"{100 * incl / total:.1f}")
    console.print(table)
    by_module: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _sep, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if frames and count.isdigit():
            by_module[_module_of(frames[-1])] += int(count)
    console.print(
        "self time by file: " + ", ".join(f"{m} {100 * n / total:.0f}%" for m, n in by_module.most_common(10))
    )


def _module_of(frame: str) -> str:
    """``send (uvicorn/protocols/http/httptools_impl.py:123)`` -> ``uvicorn/.../httptools_impl.py``."""
    if "(" not in frame:
        return frame
    where = frame.rsplit("(", 1)[1].rstrip(")").rsplit(":", 1)[0]
    parts = where.replace("\\", "/").split("/")
    for anchor in ("site-packages", "src", "python3.11", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return "/".join(parts[-3:])


# ---- the run -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, load average {load}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each wrk run")
    parser.add_argument("--relay-tokens", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true", help="also sample the gateway with py-spy under c=32")
    parser.add_argument("--py-spy", help="path of py-spy (default: on PATH or next to this Python)")
    args = parser.parse_args()
    py_spy = find_py_spy(args.py_spy) if args.profile else None
    pin(LOAD_CPU)
    console = Console(width=150)
    console.print(f"machine: {machine()}; Python {platform.python_version()}")
    sent = Sent()
    results: dict[str, PathResult] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        key = KeyStore(open_database(home)).create("bench")[1]
        with (
            SyntheticBackend(tmp / "backend.log", cpu=LOAD_CPU) as backend,
            GatewayProcess(
                home, backend=backend.url, cpu=PROXY_CPU, requests_per_minute=0, max_streams_per_key=0
            ) as gateway,
            nginx(backend.port, cpu=PROXY_CPU) as (nginx_url, nginx_pid),
            bare_proxy(backend.url, tmp / "bare.log", PROXY_CPU) as (bare_url, bare_pid),
        ):
            targets = {
                "direct backend": (backend.url, None, backend.pid),
                "through nginx": (nginx_url, None, nginx_pid),
                "bare uvicorn+aiohttp proxy": (bare_url, None, bare_pid),
                "through homellm": (gateway.url, key, gateway.pid),
            }
            for name, (url, auth, server_pid) in targets.items():
                warm = wrk(url, 32, 2, "/api/chat", CHAT, auth, LOAD_CPU)
                cpu_before = cpu_seconds(server_pid)
                c32 = wrk(url, 32, args.seconds, "/api/chat", CHAT, auth, LOAD_CPU)
                cpu = cpu_seconds(server_pid) - cpu_before
                c1 = wrk(url, 1, args.seconds, "/api/chat", CHAT, auth, LOAD_CPU)
                streamed = url != bare_url  # the bare proxy answers whole bodies only
                rates = [asyncio.run(relay_rate(url, auth, args.relay_tokens)) for _ in range(3 if streamed else 0)]
                if auth:
                    sent.add("wrk warm-up", warm.written)
                    sent.add("wrk c=32", c32.written)
                    sent.add("wrk c=1", c1.written)
                    sent.add("relay streams", len(rates))
                relay = statistics.median(rates) if rates else None
                results[name] = PathResult(c32, c1, relay, 1e6 * cpu / c32.completed, cpu / c32.seconds)
            streams = streams_check(backend, gateway, key, 500, 200)
            sent.add("500 streams", streams.streams)
            if py_spy is not None:
                profile(py_spy, gateway, key, args.seconds, sent, console)
            gateway.stop()  # flushes the usage writer
            rows = gateway.usage()
    return report(console, results, streams, sent, rows)


def report(console: Console, results: dict[str, PathResult], streams: StreamsResult, sent: Sent, rows: list) -> int:  # type: ignore[type-arg]
    table = Table(
        title="Gateway overhead: Go synthetic backend, one run (ms; req/s and chunks/s higher is better)",
        title_justify="left",
    )
    cols = (
        "path",
        "c=32 req/s",
        "c=32 p50",
        "c=32 p99",
        "CPU µs/req",
        "core share",
        "c=1 p50",
        "c=1 p99",
        "NDJSON chunks/s",
        "errors",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r.c32.rate:,.0f}",
            f"{r.c32.p50_ms:.2f}",
            f"{r.c32.p99_ms:.2f}",
            f"{r.cpu_us:.0f}",
            f"{r.core_share:.2f}",
            f"{r.c1.p50_ms:.3f}",
            f"{r.c1.p99_ms:.3f}",
            f"{r.relay:,.0f}" if r.relay else "-",
            str(r.c32.error_count + r.c1.error_count),
        )
    base = results["direct backend"]
    for name, r in results.items():
        if name.startswith("through "):
            table.add_row(
                f"  added by {name.removeprefix('through ')}",
                "",
                "",
                "",
                "",
                "",
                f"{r.c1.p50_ms - base.c1.p50_ms:+.3f}",
                f"{r.c1.p99_ms - base.c1.p99_ms:+.3f}",
                "",
                "",
            )
    console.print(table)
    g, n, bare = results["through homellm"], results["through nginx"], results["bare uvicorn+aiohttp proxy"]
    console.print(
        f"CPU per request: homellm {g.cpu_us:.0f} µs (at most {1e6 / g.cpu_us:,.0f} req/s on a whole core), the bare "
        f"uvicorn+aiohttp proxy {bare.cpu_us:.0f} µs ({1e6 / bare.cpu_us:,.0f} req/s), nginx {n.cpu_us:.0f} µs; "
        "core share below 1.00: other processes ran on the proxies' core during the run"
    )
    console.print(
        f"homellm does {100 * g.c32.rate / bare.c32.rate:.0f}% of the bare uvicorn+aiohttp proxy's c=32 rate "
        "(the same stack with no checks, no parsing, no usage log)"
    )
    console.print(
        f"500 concurrent streams x 200 chunks through homellm (from 11 addresses): {streams.exact} byte-exact, "
        f"{len(streams.errors)} errors, {streams.max_active} open at once at the backend, "
        f"{streams.seconds:.1f} s"
    )
    for e in streams.errors[:5]:
        console.print(f"  {e}")
    statuses = collections.Counter(r["status"] for r in rows)
    console.print(
        f"usage rows: {len(rows)} for {sent.total} requests sent ("
        + ", ".join(f"{k} {v}" for k, v in sent.phases.items())
        + "); statuses "
        + ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items()))
    )
    added50, added99 = g.c1.p50_ms - base.c1.p50_ms, g.c1.p99_ms - base.c1.p99_ms
    goals = [
        (f"c=32 >= 6,000 req/s ({g.c32.rate:,.0f})", g.c32.rate >= 6000),
        (f"c=32 >= 15% of nginx ({100 * g.c32.rate / n.c32.rate:.1f}%)", g.c32.rate >= 0.15 * n.c32.rate),
        (f"added latency at c=1: p50 <= 0.5 ms ({added50:+.3f} ms)", added50 <= 0.5),
        (f"added latency at c=1: p99 <= 2 ms ({added99:+.3f} ms)", added99 <= 2.0),
        (f"relay >= 60,000 NDJSON chunks/s ({g.relay or 0:,.0f})", (g.relay or 0) >= 60000),
        (
            f"500 x 200 streams byte-exact and in order ({streams.exact}/{streams.streams}, "
            f"{streams.max_active} at once)",
            streams.exact == streams.streams and streams.max_active >= streams.streams,
        ),
        (f"exactly one usage row per request ({len(rows)} rows / {sent.total} sent)", len(rows) == sent.total),
        (
            f"no errors through homellm ({g.c32.error_count + g.c1.error_count})",
            g.c32.error_count + g.c1.error_count == 0,
        ),
    ]
    for label, ok in goals:
        console.print(f"  {'met' if ok else 'MISSED'}: {label}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())

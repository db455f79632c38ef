"""What the gateway costs: the same synthetic backend called directly, through homellm, and
through nginx (when installed), side by side in one run.

    python benchmarks/gateway_overhead.py [--quick]

The backend (homellm.testing.fake_backend) answers instantly, so only the proxy is measured.
Backend, gateway and this load generator are separate processes; the gateway is pinned to
one core. It reports added latency p50/p99 for small non-streamed requests at concurrency 1
and 32, NDJSON records relayed per second, and 200 concurrent streams checked for errors,
lost and reordered chunks. Goal: added p50 <= 1 ms, p99 <= 5 ms, >= 20,000 chunks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from homellm.testing.fake_backend import free_port, wait_until_up

CHAT = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "stream": False,
        "options": {"num_predict": 1}}  # fmt: skip


@contextmanager
def process(
    cmd: list[str], env: dict[str, str] | None = None, cpu: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, {cpu})
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def nginx(backend_port: int) -> Iterator[str | None]:
    exe = shutil.which("nginx")
    if exe is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};
  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}""")
        with process([exe, "-c", str(conf), "-p", tmp], cpu=1):
            wait_until_up(f"http://127.0.0.1:{port}/api/version")
            yield f"http://127.0.0.1:{port}"


async def latencies(url: str, headers: dict[str, str], concurrency: int, total: int) -> list[float]:
    out: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up, excluded
            await client.post("/api/chat", json=CHAT)
        queue = iter(range(total))

        async def worker() -> None:
            for _ in queue:
                t = time.perf_counter()
                r = await client.post("/api/chat", json=CHAT)
                out.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def chunk_rate(url: str, headers: dict[str, str], tokens: int) -> float:
    body = {**CHAT, "stream": True, "options": {"num_predict": tokens}}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        start = time.perf_counter()
        n = 0
        async with client.stream("POST", "/api/chat", json=body) as r:
            async for _ in r.aiter_lines():
                n += 1
        return n / (time.perf_counter() - start)


async def many_streams(url: str, headers: dict[str, str], streams: int, tokens: int) -> tuple[int, int, float]:
    """(streams with errors, streams with lost or reordered chunks, seconds)."""
    body = {**CHAT, "stream": True, "options": {"num_predict": tokens}}
    limits = httpx.Limits(max_connections=streams)
    errors = bad = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as client:

        async def one() -> None:
            nonlocal errors, bad
            try:
                got: list[str] = []
                async with client.stream("POST", "/api/chat", json=body) as r:
                    if r.status_code != 200:
                        errors += 1
                        return
                    async for line in r.aiter_lines():
                        if line:
                            rec = json.loads(line)
                            if not rec["done"]:
                                got.append(rec["message"]["content"])
                if got != [f"tok{i} " for i in range(tokens)]:
                    bad += 1
            except (httpx.HTTPError, ValueError, KeyError):
                errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(streams)))
        return errors, bad, time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args()
    n1, n32, tokens = (300, 1000, 20000) if args.quick else (1000, 4000, 100000)
    console = Console(width=140)
    backend_port, gateway_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOMELLM_HOME=home, HOMELLM_REQUESTS_PER_MINUTE="0", HOMELLM_MAX_STREAMS_PER_KEY="0")
        key = json.loads(subprocess.run([sys.executable, "-m", "homellm", "keys", "create", "bench", "--json"],
                                        env=env, capture_output=True, text=True, check=True).stdout)["key"]  # fmt: skip
        auth = {"Authorization": f"Bearer {key}"}
        with (
            process([sys.executable, "-m", "homellm.testing.fake_backend", "--port", str(backend_port)], cpu=0),
            process(
                [
                    sys.executable,
                    "-m",
                    "homellm",
                    "serve",
                    "--backend",
                    f"http://127.0.0.1:{backend_port}",
                    "--port",
                    str(gateway_port),
                ],
                env=env,
                cpu=1,
            ),  # fmt: skip
            nginx(backend_port) as nginx_url,
        ):
            direct = f"http://127.0.0.1:{backend_port}"
            gateway = f"http://127.0.0.1:{gateway_port}"
            wait_until_up(direct + "/api/version")
            wait_until_up(gateway + "/api/version", headers=auth)
            targets = {"direct backend": (direct, {}), "through homellm": (gateway, auth)}
            if nginx_url:
                targets["through nginx"] = (nginx_url, {})
            results: dict[str, dict[str, float]] = {}
            for name, (url, headers) in targets.items():
                c1 = asyncio.run(latencies(url, headers, 1, n1))
                c32 = asyncio.run(latencies(url, headers, 32, n32))
                rate = asyncio.run(chunk_rate(url, headers, tokens))
                results[name] = {"p50_1": statistics.median(c1), "p99_1": pct(c1, 99),
                                 "p50_32": statistics.median(c32), "p99_32": pct(c32, 99), "rate": rate}  # fmt: skip
            errors, bad, secs = asyncio.run(many_streams(gateway, auth, 200, 200))
    table = Table(title="Gateway overhead (ms, lower is better; chunks/s higher is better)", title_justify="left")
    for col in ("path", "p50 c=1", "p99 c=1", "p50 c=32", "p99 c=32", "NDJSON chunks/s"):
        table.add_column(col, justify="left" if col == "path" else "right")
    base = results["direct backend"]
    for name, r in results.items():
        table.add_row(name, f"{r['p50_1']:.2f}", f"{r['p99_1']:.2f}", f"{r['p50_32']:.2f}", f"{r['p99_32']:.2f}",
                      f"{r['rate']:,.0f}")  # fmt: skip
    for name, r in results.items():
        if name != "direct backend":
            table.add_row(f"  added by {name.removeprefix('through ')}", f"{r['p50_1'] - base['p50_1']:+.2f}",
                          f"{r['p99_1'] - base['p99_1']:+.2f}", f"{r['p50_32'] - base['p50_32']:+.2f}",
                          f"{r['p99_32'] - base['p99_32']:+.2f}", "")  # fmt: skip
    console.print(table)
    if "through nginx" not in results:
        console.print("[dim]nginx is not installed: its column is left out (apt-get install nginx to add it)[/]")
    g = results["through homellm"]
    console.print(f"200 concurrent streams x 200 chunks through homellm: {errors} errors, {bad} lost/reordered, "
                  f"{secs:.1f} s")  # fmt: skip
    goals = [
        ("added p50 <= 1 ms (c=1)", g["p50_1"] - base["p50_1"] <= 1.0),
        ("added p99 <= 5 ms (c=1)", g["p99_1"] - base["p99_1"] <= 5.0),
        (">= 20,000 chunks/s relayed", g["rate"] >= 20000),
        ("200 streams clean", errors == 0 and bad == 0),
    ]
    for label, ok in goals:
        console.print(f"  {'met' if ok else 'MISSED'}: {label}")
    return 0 if errors == 0 and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

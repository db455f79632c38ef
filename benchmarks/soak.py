"""Soak: the gateway under steady mixed load for minutes, watched for errors and leaks.

    python benchmarks/soak.py [--minutes 5] [--concurrency 16] [--warmup 30]

One ``homellm serve`` in front of the Go synthetic backend (rate and concurrency limits raised);
16 clients send streamed and whole requests to both APIs in turn (20 tokens each) and check every
answer. After a warm-up the load pauses until the clients' connections are closed, and the gateway's
resident memory and open descriptors are taken; the same after the soak. Targets: RSS grows by
under 10%, open descriptors stay the same (the backend connection pool counted apart), 0 errors,
and one usage row per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from harness import SyntheticBackend
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.load import Outcome, run_load
from homellm.testing.processes import Descriptors, GatewayProcess

MIB = 1024 * 1024


async def load_with_samples(
    gateway: GatewayProcess, backend_port: int, key: str, concurrency: int, seconds: float, prefix: str
) -> tuple[list[Outcome], list[tuple[float, Descriptors, int]]]:
    samples: list[tuple[float, Descriptors, int]] = []
    start = time.monotonic()
    done = False

    async def sample() -> None:
        while not done:
            samples.append((time.monotonic() - start, gateway.descriptors(backend_port), gateway.client_connections()))
            await asyncio.sleep(min(10.0, seconds / 10))

    sampler = asyncio.create_task(sample())
    outcomes = await run_load(gateway.url, key, concurrency, lambda: time.monotonic() - start > seconds, prefix=prefix)
    done = True
    await sampler
    return outcomes, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=30, help="seconds of load before the baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key = KeyStore(open_database(tmp / "home")).create("soak")[1]
        with (
            SyntheticBackend(tmp / "backend.log") as backend,
            GatewayProcess(tmp / "home", backend=backend.url, requests_per_minute=0, max_streams_per_key=0) as gateway,
        ):
            warm_out, _ = asyncio.run(
                load_with_samples(gateway, backend.port, key, args.concurrency, args.warmup, "warm")
            )
            gateway.wait_settled()
            warm = gateway.descriptors(backend.port)
            start = time.perf_counter()
            outcomes, samples = asyncio.run(
                load_with_samples(gateway, backend.port, key, args.concurrency, args.minutes * 60, "soak")
            )
            seconds = time.perf_counter() - start
            gateway.wait_settled()
            end = gateway.descriptors(backend.port)
            gateway.stop()
            rows = len(gateway.usage())
    errors = [o for o in warm_out + outcomes if not o.ok]
    kinds = sorted({o.kind for o in outcomes})
    print(
        f"soak: {len(outcomes):,} requests in {seconds:.0f} s ({len(outcomes) / seconds:,.0f}/s) "
        f"at c={args.concurrency}, {' / '.join(kinds)} in turn; "
        f"warm-up {len(warm_out):,} requests in {args.warmup:.0f} s"
    )
    print("  t (s)   RSS (MiB)   descriptors (own + backend pool)   client connections")
    step = max(1, len(samples) // 10)  # about ten rows, and the last
    shown = samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])
    for t, d, clients in shown:
        print(f"  {t:5.0f}   {d.rss / MIB:9.1f}   {d.own:4d} + {d.upstream:<3d}{'':23}{clients:4d}")
    growth = (end.rss - warm.rss) / warm.rss
    peak = max([d.rss for _t, d, _c in samples] + [end.rss])
    print(f"after warm-up (idle): RSS {warm.rss / MIB:.1f} MiB, {warm.own} descriptors + {warm.upstream} pooled")
    print(
        f"after the soak (idle): RSS {end.rss / MIB:.1f} MiB ({100 * growth:+.1f}%, peak under load "
        f"{peak / MIB:.1f} MiB), {end.own} descriptors + {end.upstream} pooled"
    )
    print(f"errors: {len(errors)}" + "".join(f"\n  {o.kind} {o.tag}: {o.error}" for o in errors[:10]))
    sent = len(warm_out) + len(outcomes)
    goals = [
        (f"RSS grows by under 10% after warm-up ({100 * growth:+.1f}%)", growth < 0.10),
        (
            f"open descriptors stable ({warm.own} -> {end.own}, backend pool {warm.upstream} -> {end.upstream})",
            end.own <= warm.own,
        ),
        (f"0 errors ({len(errors)})", not errors),
        (f"one usage row per request ({rows:,} rows / {sent:,} sent)", rows == sent),
    ]
    for label, ok in goals:
        print(f"  {'met' if ok else 'MISSED'}: {label}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())

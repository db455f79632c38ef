"""The long fuzz run: hostile requests to every route of both APIs through real gateways.

    python benchmarks/fuzz.py [--examples 20000] [--seed N]

Two gateways (``homellm serve``) run in front of the scripted Ollama and OpenAI-compatible backends,
each with a valid user key (rate and concurrency limits raised, so requests get past them). Each
example is one raw request from :mod:`homellm.testing.hostile`. The rule: no 5xx except 502/504 (a
failed backend) and 501 (model management without Ollama), no traceback text in any answer or in
the gateway's log. Prints the statuses seen per route and every failure (the run stops at none).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing import hostile
from homellm.testing.processes import GatewayProcess, ScriptedBackend

LOG_MARKS = ("Traceback", "Exception in ASGI", "internal error on")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    statuses: collections.Counter[tuple[str, str, int]] = collections.Counter()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        procs: list[ScriptedBackend | GatewayProcess] = []
        gateways: dict[str, tuple[GatewayProcess, str]] = {}
        try:
            for kind in ("ollama", "openai"):
                key = KeyStore(open_database(tmp / kind)).create("user")[1]
                backend = ScriptedBackend(tmp / f"{kind}-backend.log", kind=kind)
                procs.append(backend)
                gateway = GatewayProcess(
                    tmp / kind,
                    backend=backend.url,
                    header_timeout_s=2,
                    body_timeout_s=2,
                    requests_per_minute=0,
                    max_streams_per_key=0,
                )
                procs.append(gateway)
                gateways[kind] = (gateway, key)

            @seed(args.seed)
            @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(request=hostile.requests(), kind=st.sampled_from(["ollama", "openai"]))
            def fuzz(request: hostile.HostileRequest, kind: str) -> None:
                gateway, key = gateways[kind]
                answer = hostile.send("127.0.0.1", gateway.port, request.render(f"127.0.0.1:{gateway.port}", key))
                for status in answer.statuses[:1] or [0]:
                    statuses[(kind, f"{request.method} {request.path[:40]}", status)] += 1
                problem = hostile.verdict(request, answer, kind)
                if problem is not None:
                    failures.append(
                        f"[{kind}] {request.method} {request.path[:80]!r} {request.headers!r} "
                        f"{request.body[:120]!r}: {problem}"
                    )

            start = time.perf_counter()
            fuzz()
            seconds = time.perf_counter() - start
            for kind, (gateway, _key) in gateways.items():
                log = gateway.log.read_text(errors="replace")
                failures += [f"[{kind}] the gateway's log has {m!r}" for m in LOG_MARKS if m in log]
        finally:
            for p in reversed(procs):
                p.stop()
    by_class: collections.Counter[str] = collections.Counter()
    for (_kind, _route, status), n in statuses.items():
        by_class[f"{status // 100}xx" if status else "none"] += n
    total = sum(statuses.values())
    print(
        f"fuzz: {total} requests in {seconds:.0f} s (seed {args.seed}); by class: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_class.items()))
    )
    per_status: collections.Counter[int] = collections.Counter()
    for (_kind, _route, status), n in statuses.items():
        per_status[status] += n
    print("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(per_status.items())))
    routes: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for (_kind, route, status), n in statuses.items():
        routes[route.split("?")[0] if len(route) < 40 else route][status] += n
    for route, counts in sorted(routes.items(), key=lambda kv: -sum(kv[1].values()))[:25]:
        print(f"  {route:<42} " + " ".join(f"{s}:{n}" for s, n in sorted(counts.items())))
    print(f"failures: {len(failures)}")
    for f in failures[:50]:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark runs: a loopback server with scripted token timing (the metrics must come out as worked
out by hand), then the real engine through the gateway with the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from tests.conftest import EngineGateway, Keys

from homellm.bench import speed
from homellm.bench.speed import SpeedConfig, run_speed
from homellm.bench.target import Target
from homellm.connect.profiles import Profile, ProfileStore
from homellm.serve.tls import fingerprint_of_pem
from homellm.testing.fake_backend import serve_in_thread

EXE = str(Path(sys.executable).with_name("homellm"))


class SteppedClock:
    """The benchmark's clock (``time.perf_counter`` in bench/speed.py), moved by the scripted server.

    Before each chunk the server sets the time the chunk is "sent" at; after a content chunk it waits
    until the client has read the clock for it. Every timestamp the client records is then exactly the
    scripted one, however busy the machine is.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0
        self._changed = threading.Condition()

    def perf_counter(self) -> float:
        with self._changed:
            self.reads += 1
            self._changed.notify_all()
            return self.now

    def set(self, now: float) -> int:
        """Move to ``now``; returns how many reads there have been so far."""
        with self._changed:
            self.now = now
            return self.reads

    def wait_for_read(self, after: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.reads > after, timeout=30)


@dataclass
class Scripted:
    """Ollama-style: prompt tokens = 10 + words. A stream sends an empty chunk at 0.1 s, then 5 tokens at
    0.3, 0.35, 0.40, 0.45 and 0.50 s, ends at 0.55 s and reports eval_count 5 over eval_duration 0.2 s.

    With a ``clock`` those times are the clock's; without one the stream does not wait at all, and (after
    the first, the warm-up) holds each stream until another one is in flight (``peak`` counts them)."""

    clock: SteppedClock | None = None
    streams: int = 0
    in_flight: int = 0
    peak: int = 0

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            words = len(body["messages"][-1]["content"].split())
            if not body.get("stream", True):
                return JSONResponse({"message": {"role": "assistant", "content": "x"}, "done": True,
                                     "prompt_eval_count": 10 + words, "eval_count": 1})  # fmt: skip
            self.streams += 1
            return StreamingResponse(self._stream(10 + words, warm_up=self.streams == 1),
                                     media_type="application/x-ndjson")  # fmt: skip

        async def version(request: Request) -> Response:
            return JSONResponse({"version": "0.12.0"})

        return Starlette(routes=[Route("/api/chat", chat, methods=["POST"]), Route("/api/version", version)])

    async def _stream(self, prompt_tokens: int, warm_up: bool) -> AsyncIterator[bytes]:
        clock = self.clock
        start = clock.now if clock else 0.0  # the client read its start time before sending
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if clock is None and not warm_up:
                deadline = time.monotonic() + 30
                while self.peak < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            if clock:
                clock.set(start + 0.1)
            yield b'{"message":{"role":"assistant","content":""},"done":false}\n'
            for i, at in enumerate((0.3, 0.35, 0.40, 0.45, 0.50)):
                reads = clock.set(start + at) if clock else 0
                yield json.dumps({"message": {"role": "assistant", "content": f"t{i}"}, "done": False}).encode() + b"\n"
                if clock:
                    await asyncio.to_thread(clock.wait_for_read, reads)
            if clock:
                clock.set(start + 0.55)
            done = {"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 5,
                    "eval_duration": 200_000_000, "prompt_eval_count": prompt_tokens}  # fmt: skip
            yield json.dumps(done).encode() + b"\n"
        finally:
            self.in_flight -= 1


def test_metrics_come_out_as_computed_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(speed, "time", SimpleNamespace(perf_counter=clock.perf_counter, time=time.time))
    with serve_in_thread(Scripted(clock).app()) as url:
        t = Target(url, label="scripted", api="ollama", server="scripted")
        run = asyncio.run(run_speed(t, SpeedConfig("m", [1], prompt_tokens=60, max_tokens=5, requests=4), lambda: None))
    assert run.calibrated_prompt_tokens == 60  # calibrated on the server's own count
    (one,) = run.levels
    assert one.requests == 4 and one.errors == 0
    assert one.ttft.p50 == pytest.approx(0.3) and one.ttft.p99 == pytest.approx(0.3)  # the empty chunk does not count
    assert one.itl.p50 == pytest.approx(0.05) and one.itl.p99 == pytest.approx(0.05)
    assert one.tpot.p50 == pytest.approx(0.05)  # (0.50 - 0.30) / (5 - 1)
    assert one.e2e.p50 == pytest.approx(0.55)
    assert one.decode_server.p50 == pytest.approx(25.0)  # 5 tokens / 0.2 s, as the server reports
    assert one.decode_client.p50 == pytest.approx(20.0)  # 4 tokens / 0.2 s
    assert one.wall_s == pytest.approx(4 * 0.55)  # four requests one after the other; the warm-up is not counted
    assert one.requests_per_s == pytest.approx(4 / 2.2) and one.output_tokens_per_s == pytest.approx(20 / 2.2)
    assert one.prompt_tokens == 60 and one.server_counted_tokens


def test_a_concurrency_level_runs_its_requests_at_once() -> None:
    scripted = Scripted()
    with serve_in_thread(scripted.app()) as url:
        t = Target(url, label="scripted", api="ollama", server="scripted")
        run = asyncio.run(run_speed(t, SpeedConfig("m", [2], prompt_tokens=60, max_tokens=5, requests=2), lambda: None))
    (two,) = run.levels
    assert two.requests == 2 and two.errors == 0
    assert scripted.peak == 2  # both streams were open at the same time


@pytest.fixture(scope="module")
def bench_home(tmp_path_factory: pytest.TempPathFactory, engine_gateway: EngineGateway, keys: Keys) -> Path:
    home = tmp_path_factory.mktemp("bench-home")
    pem = engine_gateway.cert.read_text()
    ProfileStore(home).save(Profile("gw", engine_gateway.url, fingerprint_of_pem(pem.encode()), pem, keys.bob))
    return home


def bench(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOMELLM_HOME=str(home), COLUMNS="200")
    return subprocess.run([EXE, "bench", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.engine
def test_speed_against_the_engine(bench_home: Path, tmp_path: Path) -> None:
    r = bench(bench_home, "speed", "gw", "-m", "smollm2:135m", "--concurrency", "1,2", "--requests", "3",
              "--prompt-tokens", "64", "--max-tokens", "16", "--json", "--plot", str(tmp_path / "p.png"),
              "--csv", str(tmp_path / "c.csv"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)
    assert abs(run["calibrated_prompt_tokens"] - 64) <= 3
    for level in run["levels"]:
        assert level["errors"] == 0 and level["requests"] == 3
        assert 0 < level["ttft"]["p50"] < level["e2e"]["p50"]
        assert level["tpot"]["p50"] > 0 and level["output_tokens_per_s"] > 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 3
    human = bench(bench_home, "speed", "gw", "-m", "smollm2:135m", "--concurrency", "1", "--requests", "2",
                  "--prompt-tokens", "32", "--max-tokens", "8")  # fmt: skip
    assert "TTFT p50/p90/p99 ms" in human.stdout and "prompts of" in human.stdout


@pytest.mark.engine
def test_quality_is_resumable_and_reported(bench_home: Path, engine_gateway: EngineGateway, keys: Keys) -> None:
    args = ("quality", "gw", "-m", "smollm2:135m", "--suite", "gsm8k", "--limit", "4", "--json")
    first = bench(bench_home, *args)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["n"] == 4 and 0 <= result["accuracy"] <= 1 and result["ci95"][0] <= result["accuracy"]
    assert result["published"] and result["published"][0]["benchmark"] == "GSM8K"
    log = bench_home / "bench" / "quality" / f"{result['run_id']}.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    log.write_text("\n".join(lines[:2]) + "\n")  # as if interrupted after two answers

    def asked() -> float:
        """Chat requests the gateway has answered: its metrics count them the moment they end (tests run one
        at a time, and a bench process exits only after its last answer)."""
        with engine_gateway.client(keys.admin) as c:
            text = c.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('homellm_requests_total{route="/api/chat"'))  # fmt: skip

    before = asked()
    second = bench(bench_home, *args)
    assert second.returncode == 0 and json.loads(second.stdout)["n"] == 4
    assert asked() - before == 2  # only the missing answers were asked again
    md = bench(bench_home, "report")
    assert "## Speed" in md.stdout and "## Quality" in md.stdout and "1.4 (5-shot)" in md.stdout
    out = bench_home / "r.html"
    assert bench(bench_home, "report", "--format", "html", "-o", str(out)).returncode == 0
    assert "<table>" in out.read_text() and "gsm8k" in out.read_text()


def test_bad_input(tmp_path: Path) -> None:
    for args, message in [
        (("speed", "-m", "x", "--concurrency", "one,two"), "--concurrency takes numbers"),
        (("quality", "-m", "x", "--suite", "trivia"), "unknown suite"),
        (("report",), "no saved runs yet"),
        (("report", "--format", "pdf"), "--format must be md or html"),
        (("speed", "http://127.0.0.1:9", "-m", "x"), "cannot reach"),
    ]:
        r = bench(tmp_path, *args)
        assert r.returncode in (1, 2) and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr

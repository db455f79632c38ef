"""One model over two machines: network namespaces joined by veth pairs stand in for the main PC (the
gateway), the worker (``homellm join --rpc``) and a third host on the same LAN. All on the CPU, with SmolLM2.

The worker pairs for real: ``homellm pair --worker`` on the main machine, ``homellm join MAIN --code CODE
--rpc`` on the worker, through the gateway's PAKE. It pairs twice, from two homes on the same machine: as
``w1`` over a plain veth pair, and as ``w1-slow`` over a second link whose delay and rate the last test
sets. That link is ``tc netem`` where the kernel has it, else the user-space wire of
:mod:`homellm.testing.link_emulator` (same delay and rate semantics), and the test says which it used.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.conftest import require_tool

from homellm.testing.fake_backend import free_port
from homellm.testing.link_emulator import SlowLink
from homellm.testing.netns import Lan, Machine, netns_unavailable, run_in
from homellm.testing.processes import Process, wait_for

pytestmark = pytest.mark.engine
EXE = str(Path(sys.executable).with_name("homellm"))
CTX = 256
MAX_MEMORY = "112MiB"  # about half of SmolLM2's layers, with the output layer
LINK_PORT = 11436
EOS_BIAS = {"0": -100, "2": -100}  # <|endoftext|> and <|im_end|>: answers run to max_tokens
SLOW_LINKS = [(0.001, 1e9), (0.005, 1e9), (0.001, 1e8), (0.005, 1e8)]  # delay each way, rate (bits/s)
ENV = {"HOMELLM_ADVERTISE": "0"}


@dataclass
class Net:
    lan: Lan
    main: Machine
    worker: Machine
    slow_worker: Machine  # the same machine (namespace) as ``worker``, another home: paired over the slow link
    third: Machine
    main_ip: str  # the main machine's address towards the worker
    worker_ip: str  # the worker's, towards the main machine
    worker_ip_third: str  # the worker's, towards the third host
    slow: SlowLink
    slow_main_ip: str
    slow_worker_ip: str


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    found = all(shutil.which(tool) for tool in ("ip", "tc", "unshare"))
    require_tool(found, "ip, tc and unshare", "apt-get install -y iproute2 util-linux (network namespaces, tc netem)")
    reason = netns_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces are required in CI to test a split over two machines: {reason}")
        pytest.skip(f"network namespaces unavailable: {reason}")
    root = tmp_path_factory.mktemp("split")
    lan = Lan(root, ["main", "worker", "third"])
    try:
        main_ip, worker_ip = lan.link("main", "worker")
        _third_ip, worker_ip_third = lan.link("third", "worker")
        # the third host can address the worker's main-facing address too (as on one LAN segment)
        subprocess.run(["ip", "-n", lan["third"].ns, "route", "add", worker_ip, "via", worker_ip_third], check=True)
        slow, slow_main_ip, slow_worker_ip = lan.slow_link("main", "worker")
        print(f"\n[split] slow links: {slow.kind}")
        slow_worker = Machine("worker", lan["worker"].ns, root / "worker-slow")
        slow_worker.home.mkdir()
        yield Net(lan, lan["main"], lan["worker"], slow_worker, lan["third"], main_ip, worker_ip, worker_ip_third,
                  slow, slow_main_ip, slow_worker_ip)  # fmt: skip
    finally:
        lan.close()


def homellm(
    m: Machine, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(m.cmd(EXE, *args, env=ENV | (env or {})), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def calibrated(net: Net) -> None:
    """``homellm plan --measure`` on the main machine; the worker runs on the same CPU, so it gets a copy."""
    r = homellm(net.main, "plan", "--measure", "--json", "--use-case", "chat")
    assert r.returncode == 0, r.stderr
    for home in (net.worker.home, net.slow_worker.home):
        shutil.copy(net.main.home / "calibration.json", home / "calibration.json")


class Worker:
    """``homellm join --rpc`` on the worker machine: paired once with a code, started again without one."""

    def __init__(self, m: Machine) -> None:
        self.machine = m
        self.log = m.home / "join.log"
        self.info: dict[str, Any] = {}

    def join(self, main: str, code: str) -> None:
        self._run(main, "--code", code)

    def start(self) -> None:
        self._run()

    def _run(self, *pairing: str) -> None:
        self.log.write_text("")
        cmd = self.machine.cmd(EXE, "join", *pairing, "--rpc", "--json", "--port", str(LINK_PORT), "--max-memory",
                               MAX_MEMORY, "--idle-timeout", "30", env=ENV)  # fmt: skip
        self.process = Process(cmd, self.log)
        wait_for(self._announced, 120, "homellm join --rpc", self.process)

    def _announced(self) -> bool:
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                self.info = json.loads(line)
                return True
        return False

    @property
    def rpc_port(self) -> int:
        return int(self.info["rpc_port"])

    def kill(self) -> None:
        self.process.kill()


@pytest.fixture(scope="module")
def workers(net: Net, calibrated: None, smollm2: Path) -> Iterator[dict[str, Worker]]:
    """Pairing for real: a TLS gateway on the main machine's LAN addresses, ``pair --worker``, ``join --rpc``."""
    port = free_port()
    assert homellm(net.main, "keys", "create", "household").returncode == 0  # a LAN gateway needs a key
    cmd = net.main.cmd(EXE, "serve", "--model", str(smollm2), "--host", "0.0.0.0", "--port", str(port), "--tls",
                       env=ENV)  # fmt: skip
    gateway = Process(cmd, net.main.home / "pairing-gateway.log")
    joined: dict[str, Worker] = {}
    try:
        wait_for(lambda: run_in(net.main.ns, _accepts, port), 300, "the pairing gateway", gateway)
        for name, machine, main_ip in (("w1", net.worker, net.main_ip), ("w1-slow", net.slow_worker, net.slow_main_ip)):
            pairing = subprocess.Popen(net.main.cmd(EXE, "pair", "--worker", "--json", "--name", name, env=ENV),
                                       stdout=subprocess.PIPE, text=True)  # fmt: skip
            assert pairing.stdout is not None
            code = json.loads(pairing.stdout.readline())["code"]
            w = Worker(machine)
            w.join(f"{main_ip}:{port}", code)
            joined[name] = w
            assert json.loads(pairing.stdout.readline())["outcome"] == "paired"
            measured = json.loads(pairing.stdout.readline())  # the short probe when joining
            assert measured["outcome"] == "measured" and measured["device"] == name, measured
            assert 0 < measured["rtt_s"] < 1 and measured["down_bytes_per_s"] > 1e6, measured
            pairing.wait(30)
            assert w.info["admits"] == main_ip and w.info["name"] == name, w.info
    finally:
        gateway.stop()
    listed = json.loads(homellm(net.main, "workers", "list", "--json").stdout)
    assert [(w["name"], w["offer"]) for w in listed] == [("w1", "rpc"), ("w1-slow", "rpc")]
    yield joined
    for w in joined.values():
        w.process.stop()


@pytest.fixture(scope="module")
def worker(workers: dict[str, Worker]) -> Worker:
    return workers["w1"]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Gateway:
    """``homellm serve`` on the main machine's loopback, with a key; requests are sent from inside its namespace."""

    def __init__(self, m: Machine, model: Path, name: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.machine = m
        self.port = free_port()
        self.home = m.home
        self.log = m.home / f"{name}.log"
        variables = {"HOMELLM_ENGINE_CTX": str(CTX), **(env or {})}
        cmd = m.cmd(EXE, "serve", "--model", str(model), "--port", str(self.port), *extra, env=ENV | variables)
        self.process = Process(cmd, self.log)
        wait_for(lambda: run_in(m.ns, _accepts, self.port), 300, f"the gateway {name}", self.process)
        made = homellm(m, "keys", "create", f"{name}-{self.port}", "--json")
        assert made.returncode == 0, made.stderr
        self.key = json.loads(made.stdout)["key"]

    def call(self, fn: Any, *args: Any) -> Any:
        return run_in(self.machine.ns, fn, f"http://127.0.0.1:{self.port}", self.key, *args)

    def engines(self) -> list[psutil.Process]:
        found = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        self.process.stop()


def _complete(url: str, key: str, prompt: str, tokens: int) -> str:
    body = {"model": "smollm2:135m", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "seed": 42}
    r = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def _status(url: str, key: str) -> tuple[int, str]:
    body = {"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2, "temperature": 0}
    try:
        r = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    except httpx.HTTPError:
        return 0, ""
    return r.status_code, r.text


PROMPTS = [
    "The three primary colours are",
    "def fibonacci(n):\n",
    "Q: What is the capital of Japan?\nA:",
]


def test_split_model_answers_exactly_like_one_machine(net: Net, worker: Worker, smollm2: Path) -> None:
    alone = Gateway(net.main, smollm2, "alone")
    try:
        expected = [alone.call(_complete, p, 48) for p in PROMPTS]
    finally:
        alone.stop()
    split = Gateway(net.main, smollm2, "split", "--with", "w1")
    try:
        got = [split.call(_complete, p, 48) for p in PROMPTS]
        banner = split.log.read_text()
    finally:
        split.stop()
    assert got == expected  # greedy, fixed seed: the same tokens, byte for byte
    assert all(len(t) > 20 for t in got)
    # the split is real: the banner says where the layers are, and llama.cpp put them there
    plan = json.loads(homellm(net.main, "fit", str(smollm2), "--with", "w1", "--ctx", str(CTX), "--json").stdout)
    remote = next(d for d in plan["devices"] if d["kind"] == "remote")
    here = plan["n_layers"] - remote["layers"]
    assert 0 < here < plan["n_layers"], plan
    assert f"split over two machines: {here} layers here, {remote['layers']} + output on CPU on w1" in banner
    # the worker's guard saw llama.cpp allocate what the plan put there (weights, KV cache, compute buffer)
    sessions = [line for line in worker.log.read_text().splitlines() if "RPC session over" in line]
    allocated = max(float(line.split("at most ")[1].split(" MiB")[0]) for line in sessions) * 2**20
    assert abs(allocated - remote["used_bytes"]) <= max(0.02 * remote["used_bytes"], 16 * 2**20), (allocated, remote)
    assert all("0 allocation(s) refused" in line for line in sessions), sessions


def _knock(host: str, port: int) -> str:
    """What a TCP connection to ``host:port`` meets: ``refused`` (nothing listens), ``dropped`` (no answer at
    all: a socket filter dropped the SYN) or ``open``."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "dropped"
    return "open"


def _tls_without_the_pin(host: str, port: int, identity: tuple[Path, Path] | None) -> bytes:
    """A valid greeting over TLS, with no client certificate or with one the worker never paired: what came back."""
    from dataclasses import asdict

    from homellm.engine.rpc import build_id

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if identity:
        ctx.load_cert_chain(*identity)
    hello = json.dumps({"v": 1, "mode": "probe", "build": asdict(build_id())}).encode()
    try:
        with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(len(hello).to_bytes(4, "big") + hello)
            return tls.recv(100)  # TLS 1.3: a refused client certificate shows up here, as an alert or the end
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""


def _stranger_identity(net: Net) -> tuple[Path, Path]:
    """A main gateway's link certificate that the worker never paired with (the third host's)."""
    from homellm.pool.worker_link import main_link_identity

    own = main_link_identity(net.third.home)
    return own.cert, own.key


def test_rpc_port_is_reachable_only_through_the_link(net: Net, worker: Worker) -> None:
    port = worker.rpc_port
    listening = subprocess.run(["ip", "netns", "exec", net.worker.ns, "ss", "-ltnH"], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
    binds = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")]
    assert binds == [f"127.0.0.1:{port}"], listening  # llama.cpp's RPC server: loopback only
    # from the third host and from the main machine, the RPC port is closed on every address of the worker
    for ns, host in ((net.third.ns, net.worker_ip_third), (net.third.ns, net.worker_ip), (net.main.ns, net.worker_ip),
                     (net.main.ns, net.slow_worker_ip), (net.main.ns, "127.0.0.1")):  # fmt: skip
        assert run_in(ns, _knock, host, port) == "refused", (ns, host)
    # the link listens on the address that faces the main machine only, and drops anyone else's packets
    assert run_in(net.third.ns, _knock, net.worker_ip_third, LINK_PORT) == "refused"
    assert run_in(net.third.ns, _knock, net.worker_ip, LINK_PORT) == "dropped"
    # from the main machine's address: TLS only, and only with the paired main gateway's certificate
    for identity in (None, _stranger_identity(net)):
        assert run_in(net.main.ns, _tls_without_the_pin, net.worker_ip, LINK_PORT, identity) == b""
    paired = (net.main.home / "tls" / "link" / "cert.pem", net.main.home / "tls" / "link" / "key.pem")
    assert b'"ok":true' in run_in(net.main.ns, _tls_without_the_pin, net.worker_ip, LINK_PORT, paired)  # the control


def test_unpaired_main_gateway_is_refused(net: Net, worker: Worker, smollm2: Path) -> None:
    from homellm.serve.tls import fingerprint_of_pem
    from homellm.store import open_database
    from homellm.store.workers import Workers

    # a stranger that knows the worker's address and certificate (both are no secret) and "paired" itself
    cert = (net.worker.home / "tls" / "worker" / "cert.pem").read_text()
    Workers(open_database(net.third.home)).add("w1", f"https://{net.worker_ip}:{LINK_PORT}", "rpc", cert,
                                               fingerprint_of_pem(cert.encode()))  # fmt: skip
    _stranger_identity(net)
    # from the third host, its packets never reach the link
    r = homellm(net.third, "fit", str(smollm2), "--with", "w1", "--ctx", str(CTX), timeout=120)
    assert r.returncode == 1 and "cannot reach worker w1" in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    # from the paired main machine's own address, but without the paired main gateway's certificate
    impostor = Machine("impostor", net.main.ns, net.third.home)
    r = homellm(impostor, "fit", str(smollm2), "--with", "w1", "--ctx", str(CTX), timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "does not admit this machine" in r.stderr or "refused the TLS handshake" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    # the paired main machine with another llama.cpp build is refused before any RPC byte
    from homellm.engine.rpc import build_id
    from homellm.pool.worker_link import LinkRefused, main_link_identity
    from homellm.split.peers import split_worker
    from homellm.split.remote import connect_worker

    other = replace(build_id(), package="0.3.35")
    record = split_worker(net.main.home, "w1")
    identity = main_link_identity(net.main.home)

    def connect() -> str:
        try:
            asyncio.run(connect_worker(record, identity, other, "rpc"))
        except LinkRefused as exc:
            return str(exc)
        return "admitted"

    refusal = run_in(net.main.ns, connect)
    assert "refused this machine" in refusal and "0.3.36" in refusal and "0.3.35" in refusal, refusal


def _stream_then_kill(url: str, key: str, worker: Worker) -> dict[str, Any]:
    """Stream a long answer; kill -9 the worker at the first token; the rest of the stream must end within 2 s."""
    import threading

    body = {"model": "smollm2:135m", "prompt": "Count: one, two, three,", "max_tokens": 400, "temperature": 0,
            "stream": True, "logit_bias": EOS_BIAS}  # fmt: skip
    rest: list[str] = []
    with httpx.stream("POST", url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=300) as r:  # fmt: skip
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(x for x in lines if x.startswith("data: {"))
        worker.kill()
        reader = threading.Thread(target=lambda: rest.extend(lines), daemon=True)
        reader.start()
        reader.join(2.0)  # the event: the stream's end, which must come within 2 s of the kill
        ended = not reader.is_alive()
        if not ended:
            r.close()
    return {"first": first, "rest": rest, "ended_within_2s": ended}


def _terminal_error(lines: list[str]) -> str:
    records = [x for x in lines if x.strip()]
    assert records[-1] == "data: [DONE]", records[-3:]
    event = json.loads(records[-2].removeprefix("data: "))
    assert event["error"]["type"] == "server_error", event
    return str(event["error"]["message"])


def test_killed_worker_is_a_clear_error_then_this_machine_serves_alone(net: Net, worker: Worker, smollm2: Path) -> None:
    split = Gateway(net.main, smollm2, "fallback", "--with", "w1")
    try:
        outcome = split.call(_stream_then_kill, worker)
        assert outcome["ended_within_2s"], outcome["rest"][-3:]
        message = _terminal_error(outcome["rest"])
        assert "worker w1" in message and "ended" in message, message
        split_engine = [p for p in split.engines() if "engine_child" in " ".join(p.cmdline())]

        def serves() -> bool:
            status, text = split.call(_status)
            assert status in (0, 200, 503), text
            return status == 200

        wait_for(serves, 300, "the gateway to serve again, on this machine alone", split.process)
        (engine,) = split.engines()
        assert "llama_cpp.server" in " ".join(engine.cmdline()) and not split_engine  # not the split engine
        assert split.call(_complete, PROMPTS[2], 16)
    finally:
        split.stop()
        worker.start()


def test_killed_worker_without_room_here_is_a_clear_503_until_it_returns(
    net: Net, worker: Worker, smollm2: Path
) -> None:
    # RAM for the plan between what the split needs here and what the model needs alone
    split_plan = json.loads(homellm(net.main, "fit", str(smollm2), "--with", "w1", "--ctx", str(CTX), "--json").stdout)
    alone_plan = json.loads(homellm(net.main, "fit", str(smollm2), "--ctx", str(CTX), "--json").stdout)
    here_split = next(d["used_bytes"] for d in split_plan["devices"] if d["kind"] == "cpu")
    here_alone = next(d["used_bytes"] for d in alone_plan["devices"] if d["kind"] == "cpu")
    assert here_split < here_alone
    ram_gib = 2 + (here_split + here_alone) / 2 / 2**30  # the advisor keeps 2 GiB for the OS
    split = Gateway(net.main, smollm2, "no-room", "--with", "w1", env={"HOMELLM_RAM_GIB": f"{ram_gib:.4f}"})
    try:
        outcome = split.call(_stream_then_kill, worker)
        assert outcome["ended_within_2s"], outcome["rest"][-3:]
        assert "worker w1" in _terminal_error(outcome["rest"])
        said: list[str] = []

        def refuses_with_the_reason() -> bool:
            status, text = split.call(_status)
            assert status in (0, 503), text
            said.append(text)
            return status == 503 and "does not fit on this machine alone" in text

        wait_for(refuses_with_the_reason, 120, "a 503 that says why", split.process)
        assert "worker w1 cannot be reached" in said[-1]
        worker.start()

        def serves() -> bool:
            return bool(split.call(_status)[0] == 200)

        wait_for(serves, 300, "the split engine back with its worker", split.process)
        assert any("engine_child" in " ".join(p.cmdline()) for p in split.engines())
    finally:
        split.stop()
        if not worker.process.alive():
            worker.start()


def _decode_speed(url: str, key: str, tokens: int) -> float:
    """Tokens per second between the first and the last streamed token of a long greedy answer."""
    body = {"model": "smollm2:135m", "prompt": "Write a long story about a lighthouse keeper.", "max_tokens": tokens,
            "temperature": 0, "stream": True, "logit_bias": EOS_BIAS}  # fmt: skip
    stamps = []
    with httpx.stream("POST", url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=600) as r:  # fmt: skip
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and '"text"' in line:
                stamps.append(time.perf_counter())
    assert len(stamps) >= tokens - 2, len(stamps)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def test_slow_links_speed_is_within_30_percent_of_the_plan(net: Net, worker: Worker, smollm2: Path) -> None:
    split = Gateway(net.main, smollm2, "slow", "--with", "w1-slow")
    rows = []
    try:
        for delay, rate in SLOW_LINKS:
            net.slow.set(delay, rate)
            r = homellm(net.main, "fit", str(smollm2), "--with", "w1-slow", "--ctx", str(CTX), "--json", "--measure")
            assert r.returncode == 0, r.stderr
            plan = json.loads(r.stdout)
            estimate = plan["decode_tokens_per_s"]
            (link,) = plan["link"]
            split.call(_decode_speed, 24)  # warm-up: caches, TCP windows, CPU clocks
            runs = [split.call(_decode_speed, 160) for _ in range(3)]
            measured = statistics.median(runs)
            rows.append((delay, rate, link, estimate, measured, runs))
    finally:
        split.stop()
        net.slow.set(0.0, None)
    print(f"\n[split] link emulation: {net.slow.kind}")
    print("delay each way | rate     | probe RTT | probe down | plan tok/s | measured tok/s (median of 3) | off")
    for delay, rate, link, estimate, measured, runs in rows:
        off = measured / estimate - 1
        print(f"{delay * 1e3:>11.0f} ms | {rate / 1e6:>5.0f} Mbit | {link['rtt_s'] * 1e3:>6.2f} ms | "
              f"{link['down_bytes_per_s'] * 8 / 1e6:>6.0f} Mbit | {estimate:>10.1f} | {measured:>6.1f} "
              f"({', '.join(f'{x:.1f}' for x in runs)}) | {off:+.0%}")  # fmt: skip
    for delay, rate, _link, estimate, measured, _runs in rows:
        assert abs(measured / estimate - 1) <= 0.30, (delay, rate, estimate, measured)

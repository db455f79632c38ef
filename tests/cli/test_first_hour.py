"""Issue 10: a newcomer's first hour. The README's and docs' commands, and the mistakes people make,
run as a user runs them (pipes, and a terminal where it matters). Two things must hold everywhere:
no traceback text is ever printed, and every failure is one line with a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from tests.conftest import EngineGateway, Keys

from homellm.testing.fake_backend import free_port

EXE = str(Path(sys.executable).with_name("homellm"))
ROOT = Path(__file__).resolve().parents[2]
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|Exception in ASGI application|^\s+File \"", re.M)


def run(*args: str, home: Path, columns: int = 200, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    e = {k: v for k, v in os.environ.items() if not k.startswith("HOMELLM_")}
    e |= {"HOMELLM_HOME": str(home), "COLUMNS": str(columns)} | (env or {})
    r = subprocess.run([EXE, *args], capture_output=True, text=True, env=e, timeout=180, input=stdin)
    assert not TRACEBACK.search(r.stdout + r.stderr), r.stdout + r.stderr
    return r


def one_line_failure(r: subprocess.CompletedProcess[str], message: str) -> None:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


# ---- the README's and docs' commands ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--help"], ["--version"], ["plan"], ["plan", "--vram", "8"], ["plan", "--use-case", "japanese"],
        ["fit", "llama3.1:8b", "--vram", "8"], ["buy", "qwen2.5:14b"], ["models"], ["gpus"], ["guide"],
        ["keys", "list"], ["usage"], ["doctor"], ["models", "--local"], ["--lang", "ja", "plan"],
    ],
    ids=shlex.join,
)  # fmt: skip
def test_the_documented_commands_run_cleanly(tmp_path: Path, args: list[str]) -> None:
    r = run(*args, home=tmp_path)
    assert r.returncode == 0, r.stderr


def _documented_commands() -> list[list[str]]:
    """Every `homellm ...` command line in the README and docs/*.md code blocks."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if doc.name == "cli.md":
            continue
        fence: str | None = None  # the language of the code block we are in, "" when none is named
        for raw in doc.read_text().splitlines():
            if raw.startswith("```"):
                fence = raw[3:].strip() if fence is None else None
                continue
            if fence not in ("", "bash", "console", "sh"):
                continue
            # a command starts its line; an indented one is output (e.g. the banner's hints)
            line = raw.removeprefix("$ ").split("  #")[0].rstrip()
            if line.startswith("homellm "):
                try:
                    found.append(shlex.split(line)[1:])
                except ValueError:
                    continue
    return found


def test_every_documented_command_and_option_exists() -> None:
    """The docs stay true: each command they show is a real command, and each option it uses is one of its options."""
    from typer.main import get_command

    from homellm.cli.app import app

    root = get_command(app)
    checked = 0
    for argv in _documented_commands():
        cmd, i = root, 0
        while i < len(argv) and hasattr(cmd, "commands") and argv[i] in cmd.commands:  # type: ignore[attr-defined]
            cmd = cmd.commands[argv[i]]  # type: ignore[attr-defined]
            i += 1
        if cmd is root:
            continue  # e.g. `homellm --help`
        names = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for arg in argv[i:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in names, f"docs use {arg} with `homellm {' '.join(argv[:i])}`"
        checked += 1
    assert checked > 20


# ---- the mistakes --------------------------------------------------------------------------


MISTAKES: list[tuple[list[str], str]] = [
    (["fit", "qwen2.5:13b"], "did you mean"),
    (["fit", "llama3.1:8b", "--ctx", "1000000"], "needs RoPE scaling"),
    (["pln"], "No such command"),
    (["plan", "--nope"], "No such option"),
    (["--lang", "xx", "plan"], "choose one of: en, ja"),
    (["keys", "revoke", "nobody"], "unknown key"),
    (["keys", "create", "eve\n"], "a key name is"),
    (["usage", "--since", "yesterday-ish"], "cannot read --since"),
    (["usage", "--by", "color"], "--by must be one of"),
    (["connect", "somewhere.local"], "give --code"),
    (["ping"], "no server connected yet"),
    (["run", "m", "hi"], "no server connected yet"),
    (["env"], "no server connected yet"),
    (["bench", "speed", "-m", "x"], "no server connected yet"),
    (["bench", "speed", "https://127.0.0.1:1", "-m", "x"], "cannot reach"),
    (["bench", "speed", "--local", "-m", "x"], "no gateway answers"),
    (["serve", "--model", "/nonexistent.gguf"], "no such file"),
    (["serve", "--model", "x.gguf", "--models-dir", "."], "give only one of"),
]


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=[shlex.join(a) for a, _ in MISTAKES])
def test_each_mistake_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    one_line_failure(run(*args, home=tmp_path), message)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("port = \n", "config.toml: Invalid value"),
        ('port = "abc"\n', "config.toml: port = 'abc' is not valid (expected an integer)"),
        ("[[backends]\n", "cannot read"),
    ],
)
@pytest.mark.parametrize("command", [["keys", "list"], ["doctor"], ["plan"], ["usage"], ["up"]])
def test_a_broken_config_file_is_one_line_for_every_command(tmp_path: Path, config: str, message: str,
                                                            command: list[str]) -> None:  # fmt: skip
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.toml").write_text(config)
    one_line_failure(run(*command, home=tmp_path), message)


def test_a_misspelt_setting_is_a_warning_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("prot = 11436\n")
    r = run("keys", "list", home=tmp_path)
    assert r.returncode == 0
    assert "unknown setting 'prot' is ignored; did you mean 'port'?" in r.stderr


def test_up_on_a_taken_port_says_so_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("up", "--demo", "--port", str(port), home=tmp_path)
    one_line_failure(r, f"port {port} is already in use")
    assert "Ctrl-C" not in r.stdout and not (tmp_path / "engine").exists()  # nothing was started


# ---- output a person reads -----------------------------------------------------------------


def _usage_rows(home: Path) -> None:
    from homellm.store import open_database
    from homellm.store.db import database_path
    from homellm.store.keys import KeyStore
    from homellm.store.usage import UsageRecord, UsageWriter

    store = KeyStore(open_database(home))
    for name in ("alice-laptop", "living-room-tablet", "admin"):
        store.create(name, ["qwen2.5:14b-instruct-q4_K_M", "phi4:14b"] if name != "admin" else None)
    writer = UsageWriter(database_path(home))
    names = ["alice-laptop", "living-room-tablet", "admin"]
    for i in range(9):
        writer.record(UsageRecord(ts=time.time() - i * 3600, key_name=names[i % 3],
                                  client_ip="192.168.1.23", method="POST", route="/api/chat",
                                  model="qwen2.5:14b-instruct-q4_K_M", status=200, prompt_tokens=1200,
                                  completion_tokens=340, ttft_ms=230.0, duration_ms=4100.0))  # fmt: skip
    writer.close()


@pytest.mark.parametrize("args", [["keys", "list"], ["usage"], ["usage", "--by", "model"], ["usage", "--by", "day"]])
def test_tables_stay_readable_at_80_columns(tmp_path: Path, args: list[str]) -> None:
    _usage_rows(tmp_path)
    r = run(*args, home=tmp_path, columns=80)
    assert r.returncode == 0, r.stderr
    assert all(len(line) <= 80 for line in r.stdout.splitlines()), r.stdout
    assert "…" not in r.stdout  # names and dates are never cut to an ellipsis
    for name in ("alice-laptop", "living-room-tablet") if args[0] == "keys" or args == ["usage"] else ():
        assert name in r.stdout


def test_plan_prints_the_disk_on_its_own_line(tmp_path: Path) -> None:
    r = run("plan", "--ram", "32", home=tmp_path)
    ram = next(line for line in r.stdout.splitlines() if line.startswith("RAM"))
    assert "free in" not in ram
    assert any(line.startswith("Disk") and "free in" in line for line in r.stdout.splitlines())


def test_ipv6_urls_in_the_banner_have_brackets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from homellm.cli.gateway import _banner
    from homellm.serve.backends import OllamaBackend
    from homellm.serve.server import Plan
    from homellm.settings import Settings

    plan = Plan(Settings(home=tmp_path, host="fd00::2", port=11435, tls=False, insecure=True),
                OllamaBackend("http://127.0.0.1:11434"), None, [])  # fmt: skip
    _banner(plan, None)
    out = capsys.readouterr().out
    assert "http://[fd00::2]:11435" in out and "http://fd00::2:11435" not in out


def test_plain_http_to_the_tls_port_gets_a_one_line_answer(gateway_home: Path, ollama_fake: object) -> None:
    from tests.conftest import run_gateway

    from homellm.serve.backends import OllamaBackend
    from homellm.serve.tls import ensure_tls

    tls = ensure_tls(gateway_home, None, None)
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), tls=tls) as (url, _):  # type: ignore[attr-defined]
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET /api/tags HTTP/1.1\r\nHost: 192.168.1.20:{port}\r\n\r\n".encode())
            answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 400")
    assert answer.rstrip().endswith(f"This server speaks HTTPS: use https://192.168.1.20:{port}/")


# ---- the gateway in a terminal ---------------------------------------------------------------


@pytest.fixture
def scripted_backend() -> Iterator[str]:
    from homellm.testing.fake_backend import Recorder, Script, make_app, serve_in_thread

    with serve_in_thread(make_app("ollama", Script(tokens=100_000, delay=0.01), Recorder())) as url:
        yield url


def test_ctrl_c_while_an_answer_streams_is_quiet(tmp_path: Path, scripted_backend: str, keys: Keys) -> None:
    """The server's own Ctrl-C path: no 'Exception in ASGI application' while a stream is cut."""
    from homellm.store import open_database
    from homellm.store.keys import KeyStore

    key = KeyStore(open_database(tmp_path)).create("t")[1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELLM_")} | {"HOMELLM_HOME": str(tmp_path)}
    child = pexpect.spawn(EXE, ["serve", "--backend", scripted_backend, "--port", str(port)], env=env,
                          encoding="utf-8", timeout=60)  # fmt: skip
    child.expect("Ctrl-C stops the gateway")
    import httpx

    with httpx.stream("POST", f"http://127.0.0.1:{port}/api/chat", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "fake:small", "messages": []}, timeout=30) as r:  # fmt: skip
        lines = r.iter_lines()
        next(lines)
        child.kill(signal.SIGINT)
        child.expect(pexpect.EOF)
    out = child.before or ""
    assert not TRACEBACK.search(out), out
    child.close()
    assert child.exitstatus in (0, 130)  # 130: stopped by Ctrl-C, as shells report it


@pytest.mark.engine
def test_bench_speed_local_measures_the_gateway_on_this_machine(engine_gateway: EngineGateway, tmp_path: Path) -> None:
    port = engine_gateway.url.rsplit(":", 1)[1]
    env = {"HOMELLM_PORT": port}
    r = run("bench", "speed", "--local", "-m", "smollm2:135m", "--concurrency", "1", "--requests", "2",
            "--prompt-tokens", "32", "--max-tokens", "4", "--json", home=engine_gateway.home, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["levels"][0]["errors"] == 0 and data["levels"][0]["requests"] == 2
    # the run's one-hour key is revoked afterwards
    listed = json.loads(run("keys", "list", "--json", home=engine_gateway.home).stdout)
    assert all(not k["active"] for k in listed if k["name"].startswith("bench-local-"))
    # a URL with an untrusted certificate is one line naming both ways out
    r = run("bench", "speed", engine_gateway.url, "-m", "smollm2:135m", home=tmp_path, env={"HOMELLM_KEY": "hlm_x"})
    one_line_failure(r, "--cacert")
    assert "--local" in r.stderr

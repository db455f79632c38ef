"""``homellm discover | pair | connect | ping | list | run | chat | bridge | env``: the other machine's side."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from homellm.cli.output import console, err_console, print_json
from homellm.i18n import _

if TYPE_CHECKING:
    from homellm.connect.profiles import Profile, ProfileStore

ProfileArg = typer.Argument(None, help="A saved connection (default: the last one connected).")
ProfileOpt = typer.Option(None, "--profile", "-p", help="A saved connection (default: the last one connected).")


def _profiles() -> ProfileStore:
    from homellm.connect.profiles import ProfileStore
    from homellm.settings import get_settings

    return ProfileStore(get_settings().home)


def _profile(name: str | None) -> Profile:
    return _profiles().get(name)


def discover(
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds to listen."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the homellm servers on this network (mDNS)."""
    from dataclasses import asdict

    from homellm.discovery import browse

    found = browse(timeout)
    if json_out:
        print_json([asdict(f) | {"url": f.url, "fingerprint": f.fingerprint} for f in found])
        return
    if not found:
        console.print(f"no homellm server answered within {timeout:g}s. On the server run `homellm up`; "
                      "mDNS does not cross routers or VPNs, so connect by address there.")  # fmt: skip
        return
    for f in found:
        console.print(f"[bold]{f.name}[/]  {f.url}  (version {f.properties.get('version', '?')})")
        console.print(f"  addresses: {', '.join(f.addresses)}  port {f.port}", soft_wrap=True)
        console.print(f"  fingerprint: {f.fingerprint or 'none (no TLS)'}", soft_wrap=True)


def pair(
    models: str | None = typer.Option(None, "--models", help="Models the new device key may use (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """On the server: print a one-time code (5 minutes, single use) for `homellm connect --code`."""
    import time

    from homellm.serve.network import hostname
    from homellm.serve.tls import fingerprint_of_pem
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.pairing import Pairing

    settings = get_settings()
    code = Pairing(open_database(settings.home)).new_code(models.split(",") if models else None)
    cert = settings.home / "tls" / "cert.pem"
    fp = fingerprint_of_pem(cert.read_bytes()) if cert.exists() else None
    if json_out:
        print_json({"code": code.code, "expires_at": code.expires_at, "fingerprint": fp})
        return
    until = time.strftime("%H:%M", time.localtime(code.expires_at))
    console.print(f"Pairing code: [bold]{code.code}[/]  (valid until {until}, once)")
    if fp:
        console.print(f"This server's fingerprint: [bold]{fp}[/]", soft_wrap=True)
    console.print(f"On the other machine run:\n  homellm connect {hostname()}.local --code {code.code}", soft_wrap=True)


def connect(
    target: str = typer.Argument(..., help="The server: a name from `homellm discover`, host, host:port or URL."),
    code: str | None = typer.Option(None, "--code", help="The code `homellm pair` printed on the server."),
    key: str | None = typer.Option(None, "--key", help="An existing API key (manual connection)."),
    fingerprint: str | None = typer.Option(None, "--fingerprint", help="The SHA256 fingerprint the server printed."),
    name: str | None = typer.Option(None, "--name", help="Name for this connection (default: the server's host)."),
    device: str | None = typer.Option(None, "--device", help="Name of this device, for the key (default: hostname)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Accept the fingerprint without asking."),
) -> None:
    """Pair with a server (or save a manual connection) and pin its certificate."""
    from homellm.connect.client import pair as do_pair
    from homellm.connect.client import server_certificate, target_url
    from homellm.connect.profiles import PinMismatch, Profile
    from homellm.errors import UsageError

    if not code and not key:
        raise UsageError("give --code CODE (run `homellm pair` on the server) or --key KEY --fingerprint SHA256:…")
    url = target_url(target)
    pem, seen = server_certificate(url)
    console.print(f"{url} presents the certificate\n  [bold]{seen}[/]", soft_wrap=True)
    if fingerprint:
        if fingerprint.strip().upper().replace("SHA256:", "") != seen.upper().replace("SHA256:", ""):
            raise PinMismatch(f"the server's fingerprint {seen} is not the {fingerprint} you gave; refusing to connect")
        console.print("  [green]matches the fingerprint you gave[/]")
    elif not yes:
        if not sys.stdin.isatty():
            raise UsageError("compare the fingerprint with the server's, then run again with --yes (or --fingerprint)")
        if not typer.confirm("Does it match the fingerprint shown on the server?", default=False):
            raise UsageError("not connected: the fingerprints must match")
    if code:
        granted = do_pair(url, code, pem, device)
        key = granted["key"]
        scope = ", ".join(granted["models"]) if granted.get("models") else "all models"
        console.print(f"paired: the server made key [bold]{granted['name']}[/] for this device ({scope})")
    assert key is not None
    from urllib.parse import urlparse

    default = target.removeprefix("homellm on ") if target.startswith("homellm on ") else urlparse(url).hostname
    profile = Profile(name or (default or "server").removesuffix(".local"), url, seen, pem, key)
    _profiles().save(profile)
    console.print(f"saved connection [bold]{profile.name}[/]. Try: homellm ping, homellm chat MODEL, homellm bridge")


def ping(profile: str | None = ProfileArg) -> None:
    """Check, step by step, that this machine can use the server; say what to fix."""
    from homellm.connect.ping import diagnose

    p = _profile(profile)
    console.print(f"[bold]{p.name}[/] {p.url}")
    steps = diagnose(p)
    for s in steps:
        mark = "[green]ok[/]  " if s.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {s.name}: {s.detail}", soft_wrap=True)
        if not s.ok and s.fix:
            console.print(f"        fix: {s.fix}", soft_wrap=True)
    if not all(s.ok for s in steps):
        raise typer.Exit(1)


def list_models(profile: str | None = ProfileArg, json_out: bool = typer.Option(False, "--json")) -> None:
    """The models this device's key may use."""
    from homellm.connect.client import list_models as fetch

    names = fetch(_profile(profile))
    if json_out:
        print_json(names)
        return
    for n in names:
        console.print(n)


def run(
    model: str = typer.Argument(..., help="Model to ask."),
    prompt: str | None = typer.Argument(None, help="The prompt (default: read standard input)."),
    profile: str | None = ProfileOpt,
) -> None:
    """Ask once and stream the answer."""
    from homellm.connect.client import client_for, stream_chat
    from homellm.errors import UsageError
    from homellm.untrusted import visible

    text = prompt if prompt is not None else sys.stdin.read()
    if not text.strip():
        raise UsageError("give a prompt, or pipe one in: echo 'hello' | homellm run MODEL")
    with client_for(_profile(profile), timeout=None) as c:
        for piece in stream_chat(c, model, [{"role": "user", "content": text}]):
            sys.stdout.write(visible(piece))  # model output is untrusted: no terminal escapes pass
            sys.stdout.flush()
    sys.stdout.write("\n")


def chat(model: str = typer.Argument(..., help="Model to chat with."), profile: str | None = ProfileOpt) -> None:
    """Chat interactively: streaming, history, multi-line input, /commands, Ctrl-C stops an answer."""
    import contextlib

    from homellm.connect.chat import ChatSession
    from homellm.connect.client import client_for

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (arrow keys and history in input())
    with client_for(_profile(profile), timeout=None) as c:
        ChatSession(c, model, console).run()


def bridge(
    profile: str | None = ProfileArg,
    port: int = typer.Option(11434, "--port", help="Local port (11434 is Ollama's)."),
    allowed_hosts: str | None = typer.Option(
        None,
        "--allowed-hosts",
        help=_(
            "More Host names that may reach the bridge, comma-separated (DNS rebinding "
            "guard; loopback names always may)."
        ),
    ),
    origins: str | None = typer.Option(
        None,
        "--origins",
        help=_(
            "More browser origins that may call the bridge, comma-separated, like "
            "OLLAMA_ORIGINS (which is read too); Ollama's defaults always may."
        ),
    ),
) -> None:
    """Serve the paired server on 127.0.0.1 as if it were a local Ollama (apps need no key)."""
    from homellm.connect.bridge import Bridge, ensure_port_free, run_bridge
    from homellm.connect.browser_guard import HostGuard, OriginPolicy, split_list
    from homellm.connect.profiles import check_pin
    from homellm.settings import get_settings

    settings = get_settings()
    guard = HostGuard(split_list(allowed_hosts))
    policy = OriginPolicy([*split_list(settings.ollama_origins), *split_list(origins)])
    p = _profile(profile)
    app = Bridge(p, guard, policy, settings.max_body_bytes)
    ensure_port_free(port)
    check_pin(p)
    console.print(_("bridge: http://127.0.0.1:{port} -> {url} (pinned, key {key}…)").format(
        port=port, url=p.url, key=p.key[:8]), soft_wrap=True, markup=False)  # fmt: skip
    console.print(_("  set OLLAMA_HOST=127.0.0.1:{port} for apps that need it; Ctrl-C stops the bridge").format(
        port=port), markup=False)  # fmt: skip
    extra = [*policy.extra]
    if extra or guard.extra:
        console.print(_("  also allowed: origins {origins}; hosts {hosts}").format(
            origins=", ".join(extra) or "-", hosts=", ".join(sorted(guard.extra)) or "-"), soft_wrap=True,
            markup=False)  # fmt: skip
    run_bridge(app, port)


def env(
    shell: str | None = typer.Option(None, "--shell", help="bash, zsh, fish or powershell (default: yours)."),
    profile: str | None = ProfileOpt,
    port: int = typer.Option(11434, "--port", help="The bridge's port."),
) -> None:
    """Print OLLAMA_HOST / OPENAI_BASE_URL / OPENAI_API_KEY for other tools (run `homellm bridge` too)."""
    from homellm.connect.env import detect_shell, env_lines
    from homellm.settings import get_settings

    chosen = shell or detect_shell(get_settings().shell, sys.platform == "win32")
    for line in env_lines(_profile(profile), chosen, port):
        sys.stdout.write(line + "\n")
    if sys.stdout.isatty():
        err_console.print('[dim]apply with: eval "$(homellm env)" (bash/zsh), or paste the lines[/]')


def register(app: typer.Typer) -> None:
    commands: dict[str, Callable[..., None]] = {
        "discover": discover, "pair": pair, "connect": connect, "ping": ping, "list": list_models,
        "run": run, "chat": chat, "bridge": bridge, "env": env,
    }  # fmt: skip
    for name, fn in commands.items():
        app.command(name)(fn)

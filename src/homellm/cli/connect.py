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
    from homellm.settings import Settings
    from homellm.store.pairing import Pairing

ProfileArg = typer.Argument(None, help=_("A saved connection (default: the last one connected)."))
ProfileOpt = typer.Option(None, "--profile", "-p", help=_("A saved connection (default: the last one connected)."))


def _profiles() -> ProfileStore:
    from homellm.connect.profiles import ProfileStore
    from homellm.settings import get_settings

    return ProfileStore(get_settings().home)


def _profile(name: str | None) -> Profile:
    return _profiles().get(name)


def discover(
    timeout: float = typer.Option(3.0, "--timeout", help=_("Seconds to listen.")),
    json_out: bool = typer.Option(False, "--json", help=_("Machine-readable output.")),
) -> None:
    """List the homellm servers on this network (mDNS: a hint of where to connect, not of who answers)."""
    from dataclasses import asdict

    from rich.text import Text

    from homellm.discovery import browse
    from homellm.untrusted import visible

    found = browse(timeout)
    if json_out:
        print_json([asdict(f) | {"url": f.url} for f in found])
        return
    if not found:
        message = _(
            "no homellm server answered within {timeout}s. On the server run `homellm up`; mDNS does not cross "
            "routers or VPNs, so connect by address there."
        )
        console.print(message.format(timeout=f"{timeout:g}"))
        return
    for f in found:  # every field is what anyone on the LAN may have announced: shown literally, bounded
        version = _("(version {version})").format(version=visible(f.properties.get("version", "?"), 40))
        console.print(Text.assemble((visible(f.name, 100), "bold"), f"  {f.url}  {version}"), soft_wrap=True)
        where = _("  addresses: {addresses}  port {port}").format(addresses=", ".join(f.addresses), port=f.port)
        console.print(Text(where), soft_wrap=True)
    console.print(_("Pair with `homellm connect NAME --code CODE`: the code, not this list, proves who the server is."))


def pair(
    models: str | None = typer.Option(
        None, "--models", help=_("Models the new device key may use, e.g. qwen2.5,phi4 (default: all).")
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help=_("Wait for the outcome (Ctrl-C stops waiting).")),
    json_out: bool = typer.Option(False, "--json", help=_("Machine-readable output: one JSON object per line.")),
    qr: bool = typer.Option(
        False, "--qr", help=_("Also print a QR code: a phone's camera opens the web app and pairs.")
    ),
    worker: bool = typer.Option(
        False,
        "--worker",
        help=_("A code for `homellm join`: another machine offers its model server to this gateway's pool."),
    ),
    name: str | None = typer.Option(None, "--name", help=_("With --worker: the worker's name in the pool.")),
    priority: int = typer.Option(0, "--priority", help=_("With --worker: its tier (higher is used first).")),
    weight: float = typer.Option(1.0, "--weight", help=_("With --worker: its share of the load among equals.")),
    max_concurrency: int = typer.Option(
        0, "--max-concurrency", help=_("With --worker: requests it runs at once (0: no cap).")
    ),
) -> None:
    """On the server: print a one-time code (5 minutes, single use) for `homellm connect --code`, and wait.

    With --worker, the code is for `homellm join` on a machine that offers its model server to the pool.
    """
    import json
    import time

    from homellm.errors import UsageError
    from homellm.serve.network import hostname
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.pairing import Pairing

    settings = get_settings()
    store = Pairing(open_database(settings.home))
    pool: dict[str, object] | None = None
    if worker:
        if models:
            raise UsageError(_("--models is for device keys; a worker serves its own models"))
        if qr:
            raise UsageError(_("--qr pairs a phone; a worker pairs with `homellm join`"))
        if weight <= 0 or max_concurrency < 0:
            raise UsageError(_("--weight must be above 0 and --max-concurrency 0 or more"))
        if name is not None:
            from homellm.protocol.pairing import device_name

            name = device_name(name)
        pool = {"name": name, "priority": priority, "weight": weight, "max_concurrency": max_concurrency}
    elif name is not None or priority or weight != 1.0 or max_concurrency:
        raise UsageError(_("--name, --priority, --weight and --max-concurrency go with --worker"))
    code = store.new_code(models.split(",") if models else None, pool)
    until = time.strftime("%H:%M", time.localtime(code.expires_at))
    if json_out:
        sys.stdout.write(json.dumps({"code": str(code.code), "expires_at": code.expires_at}) + "\n")
    elif worker:
        console.print(_("Pairing code for a worker: [bold]{code}[/]  (valid until {until}, once)").format(
            code=code.code, until=until))  # fmt: skip
        console.print(
            _(
                "On the other machine run:\n  homellm join {host}.local --code {code}\n"
                "It offers that machine's Ollama, llama-server or embedded engine to this gateway, over a link "
                "pinned in both directions; with --rpc it lends its GPU or CPU instead, for one model split over "
                "both machines (homellm serve --with NAME)."
            ).format(host=hostname(), code=code.code),
            soft_wrap=True,
        )
    else:
        console.print(_("Pairing code: [bold]{code}[/]  (valid until {until}, once)").format(code=code.code,
                                                                                             until=until))  # fmt: skip
        console.print(_("On the other machine run:\n  homellm connect {host}.local --code {code}\n"
                        "No fingerprint to compare: the code proves to each side that the other is the one holding it "
                        "and sees the same certificate, so a relay on the network makes pairing fail on both ends.")
                      .format(host=hostname(), code=code.code), soft_wrap=True)  # fmt: skip
        if not models:
            console.print(_("The device's key may use every model; to limit it: homellm pair --models a,b"),
                          style="dim", soft_wrap=True)  # fmt: skip
    if qr:
        _print_pairing_qr(settings, str(code.code), json_out)
    sys.stdout.flush()
    if wait:
        _wait_for_pairing(store, code.id, until, json_out, worker)


def _print_pairing_qr(settings: Settings, code: str, json_out: bool) -> None:
    """The web app's pairing link (the code and the certificate's fingerprint in its fragment) as a QR code."""
    import json

    from homellm.serve.tls import fingerprint_of_pem
    from homellm.web.links import app_url, lan_host, print_qr

    cert = settings.tls_cert or settings.home / "tls" / "cert.pem"
    fingerprint = fingerprint_of_pem(cert.read_bytes()) if cert.is_file() else None
    url = app_url("https" if fingerprint else "http", lan_host(), settings.port, pair=code, fp=fingerprint)
    if json_out:
        sys.stdout.write(json.dumps({"url": url, "fingerprint": fingerprint}) + "\n")
        return
    console.print(_("\nOr scan this with a phone (the web app opens and pairs; compare the certificate's "
                    "fingerprint it shows with the one `homellm up` printed):"), soft_wrap=True)  # fmt: skip
    sys.stdout.flush()
    print_qr(url, sys.stdout)
    console.print(url, soft_wrap=True, markup=False, highlight=False)


def _measure_link(name: str, json_out: bool) -> None:
    """A worker that lends its device (``join --rpc``): probe the link now, so that the first plan has it."""
    import json

    from homellm.errors import HomeLLMError
    from homellm.settings import get_settings
    from homellm.split.remote import survey_joined_worker

    try:
        record = survey_joined_worker(get_settings().home, name)
    except HomeLLMError as exc:
        if json_out:
            sys.stdout.write(json.dumps({"outcome": "unmeasured", "device": name, "error": str(exc)}) + "\n")
        else:
            said = _("the link to {name} is not measured yet ({error}); `homellm fit MODEL --with {name} --measure` "
                     "measures it").format(name=name, error=exc)  # fmt: skip
            err_console.print(said, soft_wrap=True, markup=False)
        return
    if record is None or record.link is None:
        return
    link = record.link
    if json_out:
        sys.stdout.write(json.dumps({"outcome": "measured", "device": name, **link}) + "\n")
        sys.stdout.flush()
        return
    console.print(_("link to {name}: {rtt:.2f} ms round trip, {down:.0f} Mbit/s down, {up:.0f} Mbit/s up; plan with "
                    "`homellm plan --with {name}`").format(name=name, rtt=float(link["rtt_s"]) * 1e3,
                  down=float(link["down_bytes_per_s"]) * 8 / 1e6, up=float(link["up_bytes_per_s"]) * 8 / 1e6),
                  soft_wrap=True, markup=False)  # fmt: skip


def _wait_for_pairing(store: Pairing, code_id: int, until: str, json_out: bool, worker: bool = False) -> None:
    """Print what happens to the code until it is used, withdrawn or expires; Ctrl-C stops waiting."""
    import json
    import time

    from rich.text import Text

    from homellm.untrusted import visible

    seen, gone = 0, 0
    try:
        if not json_out and worker:
            err_console.print(_("[dim]waiting for the worker (Ctrl-C stops waiting; the code stays valid until "
                                "{until})[/]").format(until=until))  # fmt: skip
        elif not json_out:
            err_console.print(_("[dim]waiting for the device (Ctrl-C stops waiting; the code stays valid until "
                                "{until})[/]").format(until=until))  # fmt: skip
        while True:
            still_open = store.is_open(code_id)  # read before the events: a use in between shows up in them
            events = store.events(code_id, seen)
            for e in events:
                seen = e.id
                device = visible(e.device or "", 64)
                if json_out:
                    sys.stdout.write(json.dumps({"outcome": e.outcome, "device": device, "source": e.source}) + "\n")
                    sys.stdout.flush()
                elif e.outcome == "failed":
                    console.print(Text(_("a pairing attempt with this code failed: wrong code or intercepted (the "
                                         "device saw another certificate); from {source}, device name {device!r}")
                                       .format(source=e.source, device=device)), soft_wrap=True)  # fmt: skip
                elif e.outcome == "paired" and worker:
                    console.print(Text(_("joined: worker {name} is in the pool").format(name=device)), soft_wrap=True)
                elif e.outcome == "paired":
                    console.print(Text(_("paired: device {device}").format(device=device)), soft_wrap=True)
                else:
                    console.print(_("the code was withdrawn after too many wrong attempts (someone may be guessing); "
                                    "run `homellm pair` again"), soft_wrap=True)  # fmt: skip
                if e.outcome == "paired" and worker:
                    _measure_link(device, json_out)
                if e.outcome != "failed":
                    raise typer.Exit(0 if e.outcome == "paired" else 1)
            gone = 0 if still_open or events else gone + 1
            if gone > 2:  # the redeem's last write (its event) lands milliseconds after the row goes
                if json_out:
                    sys.stdout.write(json.dumps({"outcome": "expired"}) + "\n")
                else:
                    console.print(_("the code expired unused; run `homellm pair` again"))
                raise typer.Exit(1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        err_console.print(_("stopped waiting; the code stays valid until {until}").format(until=until))
        raise typer.Exit(130) from None


def _read_key(from_stdin: bool) -> str:
    """An existing API key: standard input, HOMELLM_KEY, or a hidden prompt; never the command line."""
    from homellm.errors import UsageError
    from homellm.settings import get_settings

    configured = get_settings().key
    if from_stdin:
        key = sys.stdin.readline().strip()
    elif configured is not None:
        key = configured.get_secret_value().strip()
    elif sys.stdin.isatty():
        key = typer.prompt(_("API key (hidden)"), hide_input=True).strip()
    else:
        raise UsageError(_("give the key through HOMELLM_KEY or --key-stdin (keys never go on the command line)"))
    if not key or len(key) > 512 or any(c.isspace() for c in key):
        raise UsageError(_("that is not an API key; `homellm keys create` on the server prints one (hlm_…)"))
    return key


def connect(
    target: str = typer.Argument(..., help=_("The server: a name from `homellm discover`, host, host:port or URL.")),
    code: str | None = typer.Option(None, "--code", help=_("The code `homellm pair` printed on the server.")),
    key: bool = typer.Option(False, "--key", help=_("Use an existing API key, from HOMELLM_KEY or a hidden prompt.")),
    key_stdin: bool = typer.Option(False, "--key-stdin", help=_("Read the existing API key from standard input.")),
    fingerprint: str | None = typer.Option(None, "--fingerprint", help=_("The SHA256 fingerprint the server printed.")),
    name: str | None = typer.Option(None, "--name", help=_("Name for this connection (default: the server's host).")),
    device: str | None = typer.Option(
        None, "--device", help=_("Name of this device, for the key (default: hostname).")
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help=_("With --key: accept the fingerprint without asking.")),
) -> None:
    """Pair with a server (or save a manual connection) and pin its certificate.

    With --code, the code proves who the server is: no fingerprint to compare. With --key, compare the
    fingerprint (or give --fingerprint); the key is never taken from the command line.
    """
    from rich.text import Text

    from homellm.connect.client import pair as do_pair
    from homellm.connect.client import server_certificate, target_url
    from homellm.connect.profiles import PinMismatch, Profile
    from homellm.errors import UsageError
    from homellm.protocol.pairing import device_name, parse_code

    if code and (key or key_stdin):
        raise UsageError(_("give either --code or --key, not both"))
    if not code and not (key or key_stdin):
        raise UsageError(_("give --code CODE (run `homellm pair` on the server) or --key (an existing key, read from "
                           "HOMELLM_KEY, --key-stdin or a prompt) with --fingerprint SHA256:…"))  # fmt: skip
    if code:  # bad input is refused here, before anything goes on the network
        parse_code(code)
        if device:
            device_name(device)
    secret = None if code else _read_key(key_stdin)
    url = target_url(target)
    pem, seen = server_certificate(url)
    console.print(Text(_("{url} presents the certificate\n  {fingerprint}").format(url=url, fingerprint=seen)),
                  soft_wrap=True)  # fmt: skip
    if fingerprint:
        if fingerprint.strip().upper().replace("SHA256:", "") != seen.upper().replace("SHA256:", ""):
            raise PinMismatch(_("the server's fingerprint {seen} is not the {given} you gave; refusing to connect")
                              .format(seen=seen, given=fingerprint[:120]))  # fmt: skip
        console.print(_("  [green]matches the fingerprint you gave[/]"))
    elif not code and not yes:
        if not sys.stdin.isatty() or key_stdin:
            raise UsageError(_("compare the fingerprint with the server's, then run again with --fingerprint "
                               "(or --yes)"))  # fmt: skip
        if not typer.confirm(_("Does it match the fingerprint shown on the server?"), default=False):
            raise UsageError(_("not connected: the fingerprints must match"))
    if code:
        granted = do_pair(url, code, pem, device)
        secret = granted["key"]
        scope = ", ".join(granted["models"]) if granted.get("models") else _("all models")
        console.print(Text(_("paired: the server made key {name} for this device ({scope})")
                           .format(name=granted["name"], scope=scope)), soft_wrap=True)  # fmt: skip
        console.print(_("  the server proved it holds the code and serves this very certificate: no one is relaying "
                        "the connection"), soft_wrap=True)  # fmt: skip
    assert secret is not None
    from urllib.parse import urlparse

    default = target.removeprefix("homellm on ") if target.startswith("homellm on ") else urlparse(url).hostname
    profile = Profile(name or (default or "server").removesuffix(".local"), url, seen, pem, secret)
    _profiles().save(profile)
    console.print(Text(_("saved connection {name}. Try: homellm ping, homellm chat MODEL, homellm bridge")
                       .format(name=profile.name)), soft_wrap=True)  # fmt: skip


def ping(profile: str | None = ProfileArg) -> None:
    """Check, step by step, that this machine can use the server; say what to fix."""
    from homellm.connect.ping import diagnose

    p = _profile(profile)
    console.print(f"[bold]{p.name}[/] {p.url}")
    from rich.text import Text

    steps = diagnose(p)
    for s in steps:
        mark = "[green]ok[/]  " if s.ok else ("[red]FAIL[/]" if s.required else "[yellow]warn[/]")
        # what the server said is shown literally (a backend's error text is not markup)
        console.print(Text("  ") + Text.from_markup(mark) + Text(f" {s.name}: {s.detail}"), soft_wrap=True)
        if not s.ok and s.fix:
            console.print(_("        fix: {fix}").format(fix=s.fix), soft_wrap=True)
    if not all(s.ok for s in steps if s.required):
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
    model: str = typer.Argument(..., help=_("Model to ask.")),
    prompt: str | None = typer.Argument(None, help=_("The prompt (default: read standard input).")),
    profile: str | None = ProfileOpt,
) -> None:
    """Ask once and stream the answer."""
    from homellm.connect.client import client_for, stream_chat
    from homellm.errors import UsageError
    from homellm.untrusted import visible_stream

    text = prompt if prompt is not None else sys.stdin.read()
    if not text.strip():
        raise UsageError(_("give a prompt, or pipe one in: echo 'hello' | homellm run MODEL"))
    with client_for(_profile(profile), timeout=None) as c:
        for piece in stream_chat(c, model, [{"role": "user", "content": text}]):
            sys.stdout.write(visible_stream(piece))  # model output is untrusted: no terminal escapes pass
            sys.stdout.flush()
    sys.stdout.write("\n")


def chat(model: str = typer.Argument(..., help=_("Model to chat with.")), profile: str | None = ProfileOpt) -> None:
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
    port: int = typer.Option(11434, "--port", help=_("Local port (11434 is Ollama's).")),
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
    shell: str | None = typer.Option(None, "--shell", help=_("bash, zsh, fish or powershell (default: yours).")),
    profile: str | None = ProfileOpt,
    port: int = typer.Option(11434, "--port", help=_("The bridge's port.")),
) -> None:
    """Print OLLAMA_HOST / OPENAI_BASE_URL / OPENAI_API_KEY for other tools (run `homellm bridge` too)."""
    from homellm.connect.env import detect_shell, env_lines
    from homellm.settings import get_settings

    chosen = shell or detect_shell(get_settings().shell, sys.platform == "win32")
    for line in env_lines(_profile(profile), chosen, port):
        sys.stdout.write(line + "\n")
    if sys.stdout.isatty():
        err_console.print(_('[dim]apply with: eval "$(homellm env)" (bash/zsh), or paste the lines[/]'))


def register(app: typer.Typer) -> None:
    commands: dict[str, Callable[..., None]] = {
        "discover": discover, "pair": pair, "connect": connect, "ping": ping, "list": list_models,
        "run": run, "chat": chat, "bridge": bridge, "env": env,
    }  # fmt: skip
    for name, fn in commands.items():
        app.command(name)(fn)

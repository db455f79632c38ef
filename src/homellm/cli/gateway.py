"""``homellm serve`` and ``homellm up``: run the secure gateway."""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from homellm.cli.output import console, err_console
from homellm.i18n import _

if TYPE_CHECKING:
    from homellm.discovery import Advertiser
    from homellm.serve.server import Plan
    from homellm.settings import Settings
    from homellm.store.keys import KeyStore

BackendOpt = typer.Option(
    None,
    "--backend",
    help=_("URL of Ollama or an OpenAI-compatible server; repeat it (NAME=URL names one) for a pool of them."),
)
ModelOpt = typer.Option(
    None, "--model", help=_("A GGUF file for the embedded engine, or a model name (qwen2.5:7b) to pull when missing.")
)
YesOpt = typer.Option(False, "--yes", "-y", help=_("Download a missing model without asking."))
ModelsDirOpt = typer.Option(None, "--models-dir", help=_("A folder of GGUF files for the embedded engine."))
PortOpt = typer.Option(None, "--port", help=_("Port (default 11435)."))
TlsOpt = typer.Option(None, "--tls/--no-tls", help=_("HTTPS (default: on unless bound to loopback)."))
CertOpt = typer.Option(None, "--tls-cert", help=_("Your certificate (PEM)."))
KeyOpt = typer.Option(None, "--tls-key", help=_("Its private key (PEM)."))
ConfigOpt = typer.Option(None, "--config", help=_("A TOML config file (default: HOMELLM_HOME/config.toml)."))
InsecureOpt = typer.Option(None, "--insecure", help=_("Allow plain HTTP or no keys beyond loopback. Not recommended."))


def _start(
    settings: Settings, models: list[Path] | None, banner_key: str | None = None, key_file: Path | None = None
) -> None:
    from homellm.pool.members import make_router
    from homellm.serve.app import Gateway
    from homellm.serve.server import prepare, run
    from homellm.store import open_database
    from homellm.store.keys import KeyStore

    _check_port(settings)
    keys = KeyStore(open_database(settings.home))
    backend = make_router(settings, models)
    plan = prepare(settings, backend, keys.count_active())
    gateway = Gateway(settings, backend, plan.tls.fingerprint if plan.tls else None, _advertiser(plan))

    err_console.print(_("starting: {backend} ...").format(backend=backend.describe()), style="dim", soft_wrap=True,
                      markup=False)  # fmt: skip
    run(plan, gateway, lambda: _banner(plan, banner_key, key_file))


def _check_port(settings: Settings) -> None:
    """Before the engine starts, a key is made or the banner says all is well."""
    from homellm.errors import UsageError
    from homellm.serve.network import port_taken

    if port_taken(settings.host, settings.port):
        raise UsageError(_("port {port} is already in use on {host} (another homellm or Ollama?); stop it, or choose "
                           "another port with --port").format(port=settings.port, host=settings.host))  # fmt: skip


def _advertiser(plan: Plan) -> Advertiser | None:
    """mDNS for gateways that listen beyond loopback (unless advertise = false)."""
    from homellm import __version__
    from homellm.discovery import Advertiser
    from homellm.serve.network import hostname, is_loopback_bind, lan_addresses

    s = plan.settings
    if not s.advertise or is_loopback_bind(s.host):
        return None
    addresses = [a for a in lan_addresses() if ":" not in a] if s.host in ("0.0.0.0", "::") else [s.host]
    props = {"version": __version__, "fp": plan.tls.fingerprint if plan.tls else "", "api": "ollama,openai",
             "tls": "1" if plan.tls else "0"}  # fmt: skip
    return Advertiser(f"homellm on {hostname()}", s.port, addresses, props)


def _spki_pin(cert: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def _banner(plan: Plan, key: str | None, key_file: Path | None = None) -> None:
    from homellm.serve.network import hostname, http_url, is_loopback_bind, lan_addresses

    s = plan.settings
    for w in plan.warnings:
        err_console.print(_("WARNING: {warning}").format(warning=w), style="bold red", soft_wrap=True, markup=False)
    hosts = ["127.0.0.1"] if is_loopback_bind(s.host) else [*lan_addresses()[:3], f"{hostname()}.local"]
    if not is_loopback_bind(s.host) and s.host not in ("0.0.0.0", "::"):
        hosts = [s.host]
    urls = [http_url(plan.scheme, h, s.port) for h in hosts]

    def say(text: str, style: str | None = None, soft_wrap: bool = True) -> None:
        console.print(text, style=style, soft_wrap=soft_wrap, markup=False)  # [fd00::2] is an address, not markup

    say(
        _("homellm gateway in front of {backend}").format(backend=plan.backend.describe()), style="bold", soft_wrap=True
    )
    for u in urls:
        say(f"  {u}")
    if not is_loopback_bind(s.host):
        say(_("  on this machine: {url}").format(url=http_url(plan.scheme, "localhost", s.port)), soft_wrap=True)
    say(_("  web app: {url}/app/ (for a phone: homellm pair --qr)").format(url=urls[0]), soft_wrap=True)
    if plan.tls:
        say(_("  TLS certificate fingerprint: {fp}").format(fp=plan.tls.fingerprint), soft_wrap=True)
        new = _(" (new)") if plan.tls.generated else ""
        say(_("  certificate: {path}{new}").format(path=plan.tls.cert, new=new), style="dim", soft_wrap=True)
    if key:
        say("\n" + _("  Admin key (shown once, keep it safe): {key}").format(key=key), soft_wrap=True)
    elif key_file:
        say(
            "\n"
            + _(
                "  A new admin key is in {path} (readable only by you). It is not printed here, because this "
                "output may be logged."
            ).format(path=key_file),
            soft_wrap=True,
        )
    else:
        say(
            "\n" + _("  Need an admin key? On this machine: homellm keys create NAME --admin"),
            style="dim",
            soft_wrap=True,
        )
    shown = key or _("<your key>")
    url = urls[0]
    say("\n" + _("Connect from another machine"), style="bold", soft_wrap=True)
    say(
        _("  homellm pair here, then on the other machine: homellm connect {host} --code CODE").format(
            host=hosts[0] if ":" not in hosts[0] else f"[{hosts[0]}]"
        ),
        soft_wrap=True,
    )
    # the commands are literal (copied into a shell or a program); only their labels are translated
    if plan.tls:
        curl = f"curl -k --pinnedpubkey '{_spki_pin(plan.tls.cert)}' -H 'Authorization: Bearer {shown}' {url}/api/tags"
        ollama_client = (
            f"ollama.Client(host='{url}', headers={{'Authorization': 'Bearer {shown}'}}, "
            "verify=ssl.create_default_context(cafile='cert.pem'))"
        )
        openai_env = f"OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={shown} SSL_CERT_FILE=cert.pem"
    else:
        curl = f"curl -H 'Authorization: Bearer {shown}' {url}/api/tags"
        ollama_client = ""
        openai_env = f"OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={shown}"
    say(f"  {curl}", soft_wrap=True)
    if ollama_client:
        say(_("  Ollama client:  {code}").format(code=ollama_client), soft_wrap=True)
    say(_("  OpenAI client:  {code}").format(code=openai_env), soft_wrap=True)
    if plan.tls:
        say(
            _("  (copy {path} to the other machine as cert.pem, and compare the fingerprint)").format(
                path=plan.tls.cert
            ),
            style="dim",
            soft_wrap=True,
        )
    say("\n" + _("Ctrl-C stops the gateway."), style="dim", soft_wrap=True)


def _model_file(model: str, yes: bool) -> Path:
    """MODEL as a GGUF path: a file, a model already pulled, or one pulled now (after asking)."""
    import sys

    from homellm.catalog import load_catalog
    from homellm.cli.advisor import pull_model
    from homellm.errors import UsageError
    from homellm.models.resolve import gguf_path_for
    from homellm.settings import get_settings

    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError(_("{model} is not downloaded and there is no terminal to ask: run `homellm pull {model}` "
                               "first, or pass --yes").format(model=model))  # fmt: skip
        return typer.confirm(question, default=False)

    return gguf_path_for(model, catalog=load_catalog(), models_dir=get_settings().models_path, confirm=confirm,
                         pull=pull_model)  # fmt: skip


def serve(
    backend: list[str] | None = BackendOpt,
    model: str | None = ModelOpt,
    models_dir: Path | None = ModelsDirOpt,
    host: str | None = typer.Option(None, "--host", help=_("Bind address (default 127.0.0.1; 0.0.0.0 for the LAN).")),
    port: int | None = PortOpt,
    tls: bool | None = TlsOpt,
    tls_cert: Path | None = CertOpt,
    tls_key: Path | None = KeyOpt,
    config: Path | None = ConfigOpt,
    insecure: bool | None = InsecureOpt,
    yes: bool = YesOpt,
    worker: str | None = typer.Option(
        None, "--with", help=_("Split --model with this paired worker (`homellm join --rpc` runs there).")
    ),
) -> None:
    """Run the gateway in front of a backend (Ollama, llama-server, vLLM, LM Studio or the embedded engine)."""
    from homellm.errors import UsageError
    from homellm.serve.engine_backend import find_ggufs
    from homellm.settings import load_settings

    if model is not None and models_dir is not None:
        raise UsageError(_("give only one of --model and --models-dir"))
    model_file = _model_file(model, yes) if model is not None else None
    pool = _backend_flags(backend or [])
    settings = load_settings(config, **pool, model=model_file, host=host, port=port, tls=tls,
                             tls_cert=tls_cert, tls_key=tls_key, insecure=insecure, worker=worker)  # fmt: skip
    models = find_ggufs(models_dir) if models_dir else None
    _start(settings, models)


def _backend_flags(flags: list[str]) -> dict[str, object]:
    """One ``--backend URL`` is the single backend; several are a pool (each ``NAME=URL`` or ``URL``).
    Flags replace the config file's ``[[backends]]``."""
    from homellm.errors import UsageError
    from homellm.pool.members import default_name, parse_backend_flag
    from homellm.settings import BackendSpec

    if not flags:
        return {}
    if len(flags) == 1:
        return {"backend": parse_backend_flag(flags[0])[1], "backends": []}
    specs: list[BackendSpec] = []
    taken: set[str] = set()
    for flag in flags:
        name, url = parse_backend_flag(flag)
        if not url:
            raise UsageError(_("--backend needs a URL, like http://10.0.0.5:11434 or gpu=http://10.0.0.5:11434"))
        name = name or default_name(url, taken)
        if name in taken:
            raise UsageError(_("two backends are named {name!r}; give each its own name").format(name=name))
        taken.add(name)
        try:
            specs.append(BackendSpec(name=name, url=url))
        except ValueError:  # pydantic's ValidationError
            raise UsageError(_("--backend {flag!r}: a name is at most 64 characters").format(flag=flag[:100])) from None
    return {"backends": specs}


def up(
    model: str | None = typer.Argument(
        None, help=_("Serve this model with the embedded engine: a .gguf file or a name to pull (qwen2.5:7b).")
    ),
    yes: bool = YesOpt,
    demo: bool = typer.Option(False, "--demo", help=_("Serve the small SmolLM2-135M model with the embedded engine.")),
    port: int | None = PortOpt,
    host: str | None = typer.Option(None, "--host", help=_("Bind address (default 0.0.0.0: the whole LAN).")),
) -> None:
    """The one command: find a model server (or start the engine), make an admin key, serve the LAN over TLS."""
    from homellm.errors import UsageError
    from homellm.serve.engine_backend import find_ggufs
    from homellm.settings import load_settings
    from homellm.store import open_database
    from homellm.store.keys import KeyStore

    base = load_settings(host=host or "0.0.0.0", port=port, tls=True)
    _check_port(base)
    models: list[Path] | None = None
    backend: str | None = None
    if model is not None:
        models = [_model_file(model, yes)]
    elif demo:
        from homellm.engine.demo import demo_model

        models = [demo_model(base.models_path)]
    elif _ollama_running():
        backend = "http://127.0.0.1:11434"
    else:
        try:
            models = find_ggufs(base.models_path)
        except UsageError:
            raise UsageError(
                _(
                    "no Ollama on 127.0.0.1:11434 and no .gguf files in {models_path}; "
                    "start Ollama, put a model there, or try: homellm up --demo"
                ).format(models_path=base.models_path)
            ) from None
    settings = load_settings(host=host or "0.0.0.0", port=port, tls=True, backend=backend)
    keys = KeyStore(open_database(settings.home))
    created = key_file = None
    if keys.count_active() == 0:
        _key, created = keys.create(_free_name(keys), None, admin=True)
        if not sys.stdout.isatty():  # a service's output goes to a log or the journal: keep the key out of it
            key_file = _write_private(settings.home / "admin-key.txt", created + "\n")
            created = None
    _start(settings, models, banner_key=created, key_file=key_file)


def _write_private(path: Path, text: str) -> Path:
    """Write a secret readable by this user only (0600)."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def _free_name(keys: KeyStore) -> str:
    names = {k.name for k in keys.list()}
    return next(n for n in ("admin", *(f"admin-{i}" for i in range(2, 1000))) if n not in names)


def _ollama_running() -> bool:
    import httpx

    try:
        return httpx.get("http://127.0.0.1:11434/api/version", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False

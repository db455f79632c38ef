"""``homellm join`` (on a second machine) and ``homellm workers`` (on the main gateway): the pool."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from homellm.cli.output import console, err_console, gib, literal, print_json, when
from homellm.i18n import _

if TYPE_CHECKING:
    from homellm.pool.join import WorkerConfig
    from homellm.serve.tls import TlsFiles
    from homellm.split.worker import RpcOptions, RunningWorker

workers_app = typer.Typer(help=_("The machines that joined this gateway's pool."), no_args_is_help=True)


def join(
    main: str | None = typer.Argument(
        None, help=_("The main gateway: host, host:port or URL (default: the one this machine joined before).")
    ),
    code: str | None = typer.Option(None, "--code", help=_("The code `homellm pair --worker` printed there.")),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help=_("This machine's model server to offer, on loopback (default: Ollama at 127.0.0.1:11434)."),
    ),
    model: str | None = typer.Option(
        None, "--model", help=_("Offer the embedded engine with this GGUF file (or model name, pulled after asking).")
    ),
    demo: bool = typer.Option(False, "--demo", help=_("Offer the embedded engine with the small SmolLM2 model.")),
    port: int = typer.Option(11436, "--port", help=_("The link's port on this machine.")),
    listen: str | None = typer.Option(
        None,
        "--listen",
        help=_("The link's address (default: the one that faces the main gateway; never all of them)."),
    ),
    name: str | None = typer.Option(None, "--name", help=_("This machine's name in the pool (default: hostname).")),
    yes: bool = typer.Option(False, "--yes", "-y", help=_("Download a missing model without asking.")),
    rpc: bool = typer.Option(
        False,
        "--rpc",
        help=_(
            "Lend this machine's GPU or CPU to the main gateway instead, for one model split over both "
            "(llama.cpp RPC, on loopback only, reached solely through the link)."
        ),
    ),
    max_memory: str | None = typer.Option(
        None, "--max-memory", help=_("With --rpc: the most memory the main gateway may use here, e.g. 8GiB.")
    ),
    idle_timeout: float = typer.Option(
        60.0, "--idle-timeout", help=_("With --rpc: close a link on which nothing moved for this many seconds.")
    ),
    threads: int | None = typer.Option(None, "--threads", help=_("With --rpc: CPU threads of the RPC server.")),
    json_out: bool = typer.Option(False, "--json", help=_("With --rpc: print what is lent as one JSON line.")),
) -> None:
    """Offer this machine's Ollama, llama-server or embedded engine to a main gateway's pool, or with
    --rpc lend its device so that one model spans both machines (`homellm serve --with NAME` there).

    The link is TLS pinned in both directions (the pairing code proves both certificates), admits only
    the main gateway's address and certificate, and forwards to the model server on loopback only.
    """
    import asyncio

    from homellm.errors import UsageError
    from homellm.pool.join import WorkerConfig, local_offer, pair_with_main, run_worker
    from homellm.pool.worker_link import worker_link_identity
    from homellm.settings import get_settings
    from homellm.split.worker import RpcOptions, parse_size

    settings = get_settings()
    home = settings.home
    if sum(x is not None and x is not False for x in (backend, model, demo, rpc or None)) > 1:
        raise UsageError(_("give only one of --backend, --model, --demo and --rpc"))
    if not 0 < port < 65536:
        raise UsageError(_("--port must be between 1 and 65535"))
    if idle_timeout <= 0 or (threads is not None and threads < 1):
        raise UsageError(_("--idle-timeout and --threads must be positive"))
    rpc_options = RpcOptions(parse_size(max_memory) if max_memory else None, idle_timeout, threads)
    if code is None:
        config = WorkerConfig.load(home)
        if main is not None and main not in config.main_url:
            raise UsageError(_("this machine joined {url}; to join {main}, give --code from `homellm pair --worker` "
                               "there").format(url=config.main_url, main=main))  # fmt: skip
        if rpc and config.offer != "rpc":
            raise UsageError(_("this machine joined {url} to offer its model server; to lend its device instead, "
                               "join again with --code (from `homellm pair --worker` there) and --rpc").format(
                url=config.main_url))  # fmt: skip
        own = worker_link_identity(home)
    else:
        if main is None:
            raise UsageError(_("give the main gateway: homellm join HOST --code CODE"))
        models: list[Path] | None = None
        if model is not None:
            from homellm.cli.gateway import _model_file

            models = [_model_file(model, yes)]
        elif demo:
            from homellm.engine.demo import demo_model

            models = [demo_model(settings.models_path)]
        offer = local_offer(backend, models, rpc)
        config, own = pair_with_main(main, code, name, offer, port, listen, home)
        console.print(
            _(
                "joined {main} as worker {name}: it pinned this machine's certificate, and this machine pinned its"
            ).format(main=config.main_url, name=config.name),
            soft_wrap=True,
            markup=False,
        )

    if config.offer == "rpc":
        _lend(config, own, home, rpc_options, json_out)
        return

    def ready(link: object, engine: str) -> None:
        from homellm.pool.join import describe_link
        from homellm.pool.worker_link import LinkServer

        assert isinstance(link, LinkServer)
        d = describe_link(config, link)
        if engine:
            console.print(_("serving {engine}").format(engine=engine), soft_wrap=True, markup=False)
        console.print(_("link: {listen} -> {target} ({offer}), only for {admits} with the main gateway's "
                        "certificate").format(**d), soft_wrap=True, markup=False)  # fmt: skip
        console.print(_("Ctrl-C stops the link; `homellm join` (without --code) starts it again."), style="dim")
        sys.stdout.flush()

    try:
        asyncio.run(run_worker(config, own, home, settings.engine_ctx, settings.idle_timeout_s, ready))
    except KeyboardInterrupt:
        err_console.print(_("link stopped"))


def _lend(config: WorkerConfig, own: TlsFiles, home: Path, options: RpcOptions, json_out: bool) -> None:
    """``join --rpc``: llama.cpp's RPC server on loopback behind the link, until Ctrl-C."""
    import asyncio
    import logging

    from homellm.split.worker import serve_rpc_worker

    # what the link does (sessions, refusals, allocations) goes to stderr, the banner to stdout
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in ("homellm.link", "homellm.worker"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)

    def ready(worker: RunningWorker) -> None:
        (_lending_json if json_out else _lending_banner)(worker)
        sys.stdout.flush()

    try:
        asyncio.run(serve_rpc_worker(config, own, home, options, ready))
    except KeyboardInterrupt:
        err_console.print(_("lending stopped"))


def _lending_json(w: RunningWorker) -> None:
    import json

    print(json.dumps({"worker": w.facts.to_json(), "name": w.config.name, "link": f"{w.config.listen}:{w.link.port}",
                      "admits": w.config.main_address, "rpc_port": w.rpc_port,
                      "fingerprint": w.identity.fingerprint}), flush=True)  # fmt: skip


def _lending_banner(w: RunningWorker) -> None:
    f, c = w.facts, w.config
    say = console.print
    for d in f.devices:
        say(_("homellm worker {name}: lending {device} ({description}) to {main}").format(
            name=c.name, device=d.device.name, description=d.device.description, main=c.main_url),
            style="bold", soft_wrap=True, markup=False)  # fmt: skip
        say(_("  offering {offered} of it (--max-memory {cap})").format(
            offered=gib(d.offered_bytes), cap=gib(f.max_memory)), soft_wrap=True, markup=False)  # fmt: skip
    say(_("  link: {listen}:{port}, TLS pinned both ways; admits only {admits} with the main gateway's "
          "certificate").format(listen=c.listen, port=w.link.port, admits=c.main_address),
        soft_wrap=True, markup=False)  # fmt: skip
    say(_("  llama.cpp RPC server: 127.0.0.1:{port} (loopback only, reached solely through the link)").format(
        port=w.rpc_port), soft_wrap=True, markup=False)  # fmt: skip
    say(_("  build: {build}; idle timeout {idle:g} s").format(build=f.build, idle=f.idle_timeout_s),
        soft_wrap=True, markup=False)  # fmt: skip
    say("\n" + _("Ctrl-C stops lending; `homellm join` (without --code) starts it again."), style="dim")


@workers_app.command("list")
def list_workers(json_out: bool = typer.Option(False, "--json", help=_("Machine-readable output."))) -> None:
    """The joined machines: where the gateway reaches them, what they offer, their pinned certificate."""
    from rich.text import Text

    from homellm.cli.output import Col, narrow_table
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.workers import Workers

    workers = Workers(open_database(get_settings().home)).list(active_only=False)
    if json_out:
        print_json([{"name": w.name, "url": w.url, "offer": w.offer, "fingerprint": w.fingerprint,
                     "priority": w.priority, "weight": w.weight, "max_concurrency": w.max_concurrency,
                     "created_at": w.created_at, "revoked_at": w.revoked_at} for w in workers])  # fmt: skip
        return
    if not workers:
        console.print(_("no machine has joined yet: run `homellm pair --worker` here, then `homellm join` there"))
        return
    cols = [Col(_("name")), Col(_("url")), Col(_("offers")), Col(_("status")), Col(_("priority"), drop=2),
            Col(_("joined"), drop=1), Col(_("certificate"), drop=3)]  # fmt: skip
    rows: list[list[str | Text]] = [
        [literal(w.name), w.url, w.offer, _("revoked") if w.revoked_at else _("active"), str(w.priority),
         when(w.created_at), w.fingerprint[:23] + "…"]
        for w in workers
    ]  # fmt: skip
    console.print(narrow_table(cols, rows))


@workers_app.command("revoke")
def revoke_worker(name: str = typer.Argument(..., help=_("The worker's name."))) -> None:
    """Take a machine out of the pool; the gateway stops using it within a second."""
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.workers import Workers

    Workers(open_database(get_settings().home)).revoke(name)
    console.print(_("revoked worker {name!r}; it joins again only with a new code").format(name=name), markup=False)

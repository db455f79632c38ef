"""``homellm join`` (on a second machine) and ``homellm workers`` (on the main gateway): the pool."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from homellm.cli.output import console, err_console, literal, print_json, when
from homellm.i18n import _

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
) -> None:
    """Offer this machine's Ollama, llama-server or embedded engine to a main gateway's pool.

    The link is TLS pinned in both directions (the pairing code proves both certificates), admits only
    the main gateway's address and certificate, and forwards to the model server on loopback only.
    """
    import asyncio

    from homellm.errors import UsageError
    from homellm.pool.join import WorkerConfig, local_offer, pair_with_main, run_worker
    from homellm.pool.worker_link import link_identity
    from homellm.settings import get_settings

    settings = get_settings()
    home = settings.home
    if sum(x is not None and x is not False for x in (backend, model, demo)) > 1:
        raise UsageError(_("give only one of --backend, --model and --demo"))
    if not 0 < port < 65536:
        raise UsageError(_("--port must be between 1 and 65535"))
    if code is None:
        config = WorkerConfig.load(home)
        if main is not None and main not in config.main_url:
            raise UsageError(_("this machine joined {url}; to join {main}, give --code from `homellm pair --worker` "
                               "there").format(url=config.main_url, main=main))  # fmt: skip
        own = link_identity(home / "tls" / "worker", "homellm worker", client=False)
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
        offer = local_offer(backend, models)
        config, own = pair_with_main(main, code, name, offer, port, listen, home)
        console.print(
            _(
                "joined {main} as worker {name}: it pinned this machine's certificate, and this machine pinned its"
            ).format(main=config.main_url, name=config.name),
            soft_wrap=True,
            markup=False,
        )

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

"""``homellm join --rpc``: lend this machine's device to the main gateway it joined (llama.cpp RPC)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from homellm.cli.output import console, gib
from homellm.i18n import _

if TYPE_CHECKING:
    from homellm.split.worker import RunningWorker


def join(
    rpc: bool = typer.Option(
        False,
        "--rpc",
        help=_("Lend this machine's GPU or CPU to the main gateway (llama.cpp RPC) over a pinned TLS link."),
    ),
    max_memory: str | None = typer.Option(
        None, "--max-memory", help=_("The most memory the main gateway may use here, e.g. 8GiB (default: all free).")
    ),
    host: str = typer.Option("0.0.0.0", "--host", help=_("Address the link listens on.")),
    port: int = typer.Option(11436, "--port", help=_("Port of the link.")),
    idle_timeout: float = typer.Option(
        60.0, "--idle-timeout", help=_("Close a link on which nothing arrived for this many seconds.")
    ),
    threads: int | None = typer.Option(None, "--threads", help=_("CPU threads of the RPC server.")),
    json_out: bool = typer.Option(False, "--json", help=_("Print what is offered as one JSON line, then serve.")),
) -> None:
    """On a second machine: lend its device to the main gateway it joined, so one model spans both.

    llama.cpp's RPC server listens on 127.0.0.1 only, reached solely through the pinned TLS link.
    """
    import asyncio
    import contextlib

    from homellm.errors import UsageError
    from homellm.settings import get_settings
    from homellm.split.worker import WorkerOptions, parse_size, serve_worker

    if not rpc:
        raise UsageError(_("give --rpc to lend this machine's device to the main gateway it joined"))
    if idle_timeout <= 0 or not 0 < port < 65536 or (threads is not None and threads < 1):
        raise UsageError(_("--idle-timeout and --threads must be positive and --port a port number"))
    options = WorkerOptions(host, port, parse_size(max_memory) if max_memory else None, idle_timeout, threads)

    import logging
    import sys

    # what the link does (sessions, refusals, allocations) goes to stderr, the banner to stdout
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in ("homellm.link", "homellm.worker"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)

    def ready(worker: RunningWorker) -> None:
        (_banner_json if json_out else _banner)(worker)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_worker(get_settings().home, options, ready))


def _banner_json(w: RunningWorker) -> None:
    import json

    print(json.dumps({"worker": w.facts.to_json(), "link_port": w.link.port, "rpc_port": w.rpc_port,
                      "fingerprint": w.identity.fingerprint, "main": w.main.name}), flush=True)  # fmt: skip


def _banner(w: RunningWorker) -> None:
    from rich.text import Text

    f = w.facts
    say = console.print
    for d in f.devices:
        say(
            Text(
                _("homellm worker: lending {device} ({description}) to the main gateway {main}").format(
                    device=d.device.name, description=d.device.description, main=w.main.name
                ),
                style="bold",
            ),
            soft_wrap=True,
        )
        say(_("  offering {offered} of it (--max-memory {cap})").format(
            offered=gib(d.offered_bytes), cap=gib(f.max_memory)), soft_wrap=True)  # fmt: skip
    say(_("  link: {host}:{port}, TLS; admits only {fp} (the main gateway)").format(
        host=w.options.host, port=w.link.port, fp=w.main.fingerprint), soft_wrap=True)  # fmt: skip
    say(_("  this machine's link certificate: {fp}").format(fp=w.identity.fingerprint), soft_wrap=True)
    say(_("  llama.cpp RPC server: 127.0.0.1:{port} (loopback only, reached solely through the link)").format(
        port=w.rpc_port), soft_wrap=True)  # fmt: skip
    say(_("  build: {build}; idle timeout {idle:g} s").format(build=f.build, idle=f.idle_timeout_s), soft_wrap=True)
    say("\n" + _("Ctrl-C stops lending."), style="dim")

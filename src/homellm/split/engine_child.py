"""The main machine's engine process for a split model: llama-cpp-python's server, plus the worker's device.

Before the model loads, this process opens a loopback endpoint (``127.0.0.1``, any free port, admitting
only this very process) that carries llama.cpp's RPC over the pinned link to the worker, and registers
that endpoint with llama.cpp as an RPC device (:func:`homellm.engine.rpc.add_server`). llama.cpp then
offloads its last layers to it, as ``llama-server --rpc`` would.

When the link ends while the engine runs, llama.cpp cannot go on (its next RPC call would abort the
process), so this process exits at once with :data:`LINK_LOST`; the gateway's supervisor restarts the
engine, on this machine alone when the worker is gone and the model fits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from homellm.i18n import _

LINK_LOST = 75  # EX_TEMPFAIL: the worker's link ended; the supervisor restarts without it if it must

log = logging.getLogger("homellm.engine")


@dataclass(frozen=True)
class SplitLink:
    """What the engine process needs to reach the worker (written by the supervisor as JSON)."""

    home: str
    worker: str
    host: str
    port: int
    cert_pem: str
    marker: str  # written just before the process exits for a lost link (the gateway reads it, no race)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


def _own_connection(peer: tuple[str, int]) -> bool:
    """Whether the local peer's socket belongs to this process (llama.cpp), not to another program."""
    import psutil

    try:
        return any(c.laddr and (c.laddr.ip, c.laddr.port) == (peer[0], peer[1])
                   for c in psutil.Process().net_connections(kind="tcp"))  # fmt: skip
    except psutil.Error:
        return False


async def _endpoint(link: SplitLink, lost: threading.Event) -> int:
    from homellm.engine.rpc import build_id
    from homellm.pool.worker_link import main_link_identity, serve_local_endpoint
    from homellm.split.peers import WorkerRecord
    from homellm.split.remote import connect_worker
    from homellm.split.rpc_wire import MainKeepalive

    identity = main_link_identity(Path(link.home))
    build = build_id()
    record = WorkerRecord(link.worker, link.host, link.port, link.cert_pem, "")

    async def connect():  # type: ignore[no-untyped-def]
        streams, facts = await connect_worker(record, identity, build, "rpc")
        return streams, MainKeepalive(), facts.idle_timeout_s / 4

    def before_close(why: str) -> None:
        if why != "closed":  # not llama.cpp hanging up: the worker or the link is gone
            Path(link.marker).write_text(why, encoding="utf-8")
            said = _("homellm: the link to worker {worker} ended ({why}); exiting so that the gateway restarts the "
                     "engine").format(worker=link.worker, why=why)  # fmt: skip
            print(said, file=sys.stderr, flush=True)
            lost.set()
            os._exit(LINK_LOST)

    # llama.cpp keeps its RPC connection for as long as the model is loaded: no idle timeout on this side
    # (the worker's keep-alives arrive every idle/4 s), only the worker's own.
    server = await serve_local_endpoint(connect, idle_timeout=365 * 86400, admit=_own_connection,
                                        before_close=before_close)  # fmt: skip
    return server.port


def main(link_file: str, config_file: str) -> None:  # pragma: no cover - the engine child's entry point
    from homellm.engine.rpc import add_server

    link = SplitLink(**json.loads(Path(link_file).read_text(encoding="utf-8")))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="homellm-link").start()
    lost = threading.Event()
    port = asyncio.run_coroutine_threadsafe(_endpoint(link, lost), loop).result(30)
    devices = add_server(f"127.0.0.1:{port}")
    names = ", ".join(f"{d.name} ({d.description}, {d.free_bytes / 2**20:.0f} MiB free)" for d in devices)
    said = _("homellm: worker {worker} at {host}:{port} adds {devices}").format(
        worker=link.worker, host=link.host, port=link.port, devices=names
    )
    print(said, file=sys.stderr, flush=True)
    sys.argv = ["llama_cpp.server", "--config_file", config_file]
    from llama_cpp.server.__main__ import main as serve

    serve()  # type: ignore[no-untyped-call]


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1], sys.argv[2])

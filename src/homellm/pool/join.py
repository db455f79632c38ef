"""``homellm join``: this machine offers its model server to a main gateway's pool, or (``--rpc``) lends
its device to the main gateway for one model split over both (:mod:`homellm.split.worker`).

1. The main gateway's certificate is fetched and the pairing code proves it (the PAKE of
   ``protocol/pairing.py``, as for ``homellm connect``): no fingerprint to compare.
2. In the same exchange this machine sends, sealed under the PAKE key, its offer: the port of its link,
   what it serves (Ollama, an OpenAI-compatible server, the embedded engine, or ``rpc``) and its own link
   certificate. The main answers, sealed likewise, with the certificate it will present on the link.
3. The link (:func:`homellm.pool.worker_link.serve_link`) listens on the address that faces the main
   gateway only, admits only the main's address presenting that certificate, and forwards to the local
   model server, which stays on loopback. The main adds this machine to its pool within a second.

What was agreed is saved in ``HOMELLM_HOME/worker.json`` (0600): ``homellm join`` without ``--code``
serves the link again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homellm.errors import HomeLLMError, UsageError
from homellm.i18n import _

if TYPE_CHECKING:
    from collections.abc import Callable

    from homellm.pool.worker_link import LinkServer
    from homellm.serve.tls import TlsFiles

LINK_PORT = 11436


@dataclass(frozen=True)
class Offer:
    """What this machine serves: the kind the main sees and the loopback port the link forwards to."""

    kind: str  # ollama | openai | engine | rpc
    port: int
    engine_models: tuple[str, ...] = ()  # GGUF paths when the link serves the embedded engine


@dataclass
class WorkerConfig:
    """The agreement with the main gateway, as saved in ``worker.json``."""

    name: str
    main_url: str
    main_fingerprint: str
    main_address: str  # the only address the link admits
    client_cert_pem: str  # the certificate the main presents on the link
    listen: str
    port: int
    offer: str
    target_port: int
    engine_models: list[str]

    @staticmethod
    def path(home: Path) -> Path:
        return home / "worker.json"

    def save(self, home: Path) -> Path:
        from homellm.store.db import private_folder

        private_folder(home)
        path = self.path(home)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=2)
        return path

    @classmethod
    def load(cls, home: Path) -> WorkerConfig:
        path = cls.path(home)
        if not path.exists():
            raise UsageError(_("this machine has not joined a gateway yet: run `homellm pair --worker` on the main "
                               "gateway, then `homellm join MAIN --code CODE` here"))  # fmt: skip
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            raise HomeLLMError(_("{path} is damaged; move it away and join again").format(path=path)) from None


def resolve(host: str, port: int) -> str:
    """The address ``host`` resolves to (the one the link will admit)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(_("cannot resolve {host}: {error}").format(host=host, error=exc.strerror)) from None
    return str(infos[0][4][0])


def facing_address(peer: str) -> str:
    """This machine's address on the interface that reaches ``peer`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer, 9))
        except OSError as exc:
            raise UsageError(_("no route to {peer}: {error}").format(peer=peer, error=exc)) from None
        return str(s.getsockname()[0])


def check_free(address: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        try:
            s.bind((address, port))
        except OSError:
            raise UsageError(_("port {port} is in use on {address}; choose another with --port").format(
                port=port, address=address)) from None  # fmt: skip


def local_offer(backend: str | None, models: list[Path] | None, rpc: bool = False) -> Offer:
    """The model server this machine offers: a loopback URL (Ollama or OpenAI-compatible), the engine, or
    (``rpc``) its device through llama.cpp's RPC server, whose loopback port is chosen at each start."""
    from urllib.parse import urlsplit

    from homellm.serve.backends import detect_backend
    from homellm.serve.network import is_loopback_bind

    if rpc:
        from homellm.engine.rpc import require_rpc

        require_rpc()  # before the code is spent: this engine cannot lend without it
        return Offer("rpc", 0)
    if models:
        from homellm.engine.supervisor import free_port

        return Offer("engine", free_port(), tuple(str(p) for p in models))
    url = backend or "http://127.0.0.1:11434"
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname or not is_loopback_bind(parts.hostname):
        raise UsageError(_("--backend must be a model server on this machine's loopback, like http://127.0.0.1:11434 "
                           "(the link forwards to loopback only)"))  # fmt: skip
    found = asyncio.run(detect_backend(url, 5.0))
    port = parts.port or 80
    with socket.socket() as s:
        s.settimeout(2)
        if s.connect_ex((parts.hostname, port)) != 0:
            raise UsageError(_("nothing answers at {url}: start Ollama (or llama-server) first, or offer the embedded "
                               "engine with --model FILE.gguf or --demo").format(url=url))  # fmt: skip
    return Offer(found.kind, port)


def pair_with_main(
    target: str, code: str, name: str | None, offer: Offer, port: int, listen: str | None, home: Path
) -> tuple[WorkerConfig, TlsFiles]:
    """Pair with the main gateway as a worker; returns the saved agreement and this machine's link identity."""
    from urllib.parse import urlsplit

    from homellm.connect.client import pair_exchange, server_certificate, target_url
    from homellm.pool.worker_link import worker_link_identity
    from homellm.protocol.pairing import default_device, device_name, parse_code
    from homellm.serve.tls import fingerprint_of_pem
    from homellm.untrusted import visible

    parse_code(code)
    chosen = device_name(name) if name else default_device(socket.gethostname())
    url = target_url(target)
    parts = urlsplit(url)
    main_address = resolve(parts.hostname or "", parts.port or 443)
    address = listen or facing_address(main_address)
    check_free(address, port)
    own = worker_link_identity(home)
    pem, seen = server_certificate(url)
    grant = pair_exchange(url, code, pem, chosen,
                          {"port": port, "offer": offer.kind, "cert": own.cert.read_text()})  # fmt: skip
    client_cert, granted_name = grant.get("client_cert"), grant.get("name")
    if grant.get("worker") is not True or not isinstance(client_cert, str) or not isinstance(granted_name, str):
        raise HomeLLMError(_("the gateway's answer is not a worker registration; update homellm on both machines"))
    try:
        fingerprint_of_pem(client_cert.encode())
    except ValueError:
        raise HomeLLMError(_("the gateway's link certificate is malformed")) from None
    config = WorkerConfig(visible(granted_name, 64), url, seen, main_address, client_cert, address, port, offer.kind,
                          offer.port, list(offer.engine_models))  # fmt: skip
    config.save(home)
    return config, own


async def run_worker(
    config: WorkerConfig, own: TlsFiles, home: Path, engine_ctx: int | None, idle_timeout: float,
    on_ready: Callable[[LinkServer, str], None],
) -> None:  # fmt: skip
    """Start the embedded engine (when offered) and the link; serve until cancelled (Ctrl-C)."""
    from homellm.pool.worker_link import serve_link

    engine = None
    if config.offer == "engine":
        from homellm.serve.engine_backend import EngineBackend

        paths = [Path(p) for p in config.engine_models]
        engine = EngineBackend(paths, home / "engine", engine_ctx, config.target_port, idle_timeout)
        await engine.start()
    try:
        link = await serve_link((config.listen, config.port), config.target_port, own, config.client_cert_pem,
                                allowed_peer=config.main_address)  # fmt: skip
        on_ready(link, engine.describe() if engine is not None else "")
        try:
            await asyncio.Event().wait()
        finally:
            await link.close()
    finally:
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.close()


def describe_link(config: WorkerConfig, link: LinkServer) -> dict[str, Any]:
    return {
        "name": config.name,
        "main": config.main_url,
        "listen": f"{config.listen}:{link.port}",
        "admits": config.main_address,
        "offer": config.offer,
        "target": f"127.0.0.1:{config.target_port}",
    }

"""The pool's members, from the settings (``[[backends]]``, ``--backend``, the embedded engine) and from
the machines that joined (``homellm join``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from homellm.errors import UsageError
from homellm.i18n import N_, _
from homellm.serve.backends import Backend, OllamaBackend, OpenAIBackend, detect_backend
from homellm.serve.router import Member, PoolOptions, Router

if TYPE_CHECKING:
    from homellm.serve.tls import TlsFiles
    from homellm.settings import BackendSpec, Settings
    from homellm.store.workers import Worker

CONNECT_TIMEOUT = 1.0  # pool members are on the LAN: a box that does not answer in 1 s is routed around


def default_name(url: str, taken: set[str]) -> str:
    """``http://10.0.0.5:11434`` -> ``10.0.0.5``, then ``10.0.0.5:11435`` when that is taken."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = parts.hostname or "backend"
    for name in (host, f"{host}:{parts.port}" if parts.port else host, *(f"{host}-{i}" for i in range(2, 1000))):
        if name not in taken:
            return name
    return url  # pragma: no cover - a thousand backends on one host


def parse_backend_flag(text: str) -> tuple[str, str]:
    """``--backend URL`` or ``--backend NAME=URL`` -> (name or "", url)."""
    name, sep, url = text.partition("=")
    if sep and "://" not in name and "/" not in name:
        return name.strip(), url.strip()
    return "", text.strip()


async def _backends(specs: list[BackendSpec], idle_timeout: float) -> list[Backend]:
    async def one(spec: BackendSpec) -> Backend:
        if spec.kind is not None:
            url = spec.url if "://" in spec.url else "http://" + spec.url
            return (OllamaBackend if spec.kind == "ollama" else OpenAIBackend)(url.rstrip("/"), idle_timeout)
        return await detect_backend(spec.url, idle_timeout)

    return list(await asyncio.gather(*(one(s) for s in specs)))


def _specs(settings: Settings) -> list[BackendSpec]:
    from homellm.settings import BackendSpec

    specs = list(settings.backends)
    if settings.backend:
        specs.insert(0, BackendSpec(url=settings.backend))
    return specs


def make_router(settings: Settings, models: list[Path] | None = None) -> Router:
    """The gateway's backends: one (the fast path, exactly as before) or a pool.

    A pool is every ``[[backends]]`` table and ``--backend`` URL, plus the embedded engine when
    ``--model``/``--models-dir`` is given too (it is then the member named ``engine``).
    """
    from homellm.serve.server import make_backend

    specs = _specs(settings)
    paths = models or ([settings.model] if settings.model else [])
    options = PoolOptions.from_settings(settings)
    if len(specs) + (1 if paths else 0) <= 1 and not any(s.max_concurrency for s in specs):
        return Router.of(make_backend(settings, models), options)
    backends = asyncio.run(_backends(specs, settings.idle_timeout_s))
    members: list[Member] = []
    taken: set[str] = set()
    for spec, backend in zip(specs, backends, strict=True):
        name = spec.name or default_name(spec.url, taken)
        if name in taken:
            raise UsageError(_("two backends are named {name!r}; give each its own name").format(name=name))
        taken.add(name)
        backend.connect_timeout = CONNECT_TIMEOUT
        members.append(Member(name, backend, spec.priority, spec.weight, spec.max_concurrency))
    if paths:
        from homellm.serve.engine_backend import EngineBackend

        for p in paths:
            if not p.is_file():
                raise UsageError(_("no such file: {path}").format(path=p))
        if "engine" in taken:
            raise UsageError(_("the embedded engine is the backend named 'engine': give the other one another name"))
        engine = EngineBackend(paths, settings.home / "engine", settings.engine_ctx, settings.engine_port,
                               settings.idle_timeout_s, settings.worker)  # fmt: skip
        members.append(Member("engine", engine))
    return Router(members, options)


class RemoteEngine(OpenAIBackend):
    """A worker's embedded engine (llama-cpp-python's server) over the link: it finishes a non-streamed
    generation whatever the client does, so the gateway streams upstream and assembles the answer."""

    label = N_("the embedded engine of a worker")
    stops_on_disconnect = False
    answers_while_busy = False


def worker_member(worker: Worker, identity: TlsFiles, idle_timeout: float) -> Member:
    """A joined machine as a pool member: https to the address it paired from, TLS pinned both ways."""
    from homellm.pool.worker_link import client_context

    kind: type[Backend] = {"ollama": OllamaBackend, "openai": OpenAIBackend, "engine": RemoteEngine}[worker.offer]
    backend = kind(worker.url, idle_timeout, CONNECT_TIMEOUT)
    backend.ssl_context = client_context(identity, worker.cert_pem)
    return Member(worker.name, backend, worker.priority, worker.weight, worker.max_concurrency, joined=True)

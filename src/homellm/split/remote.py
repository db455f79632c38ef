"""The main machine's side of a link: reach a paired worker, greet it, measure the link, remember it all.

``plan``/``fit --with WORKER`` plan with what was last stored (measuring when nothing was, or with
``--measure``); ``serve --with WORKER`` greets and measures again before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, replace
from pathlib import Path

from homellm.catalog import Catalog
from homellm.engine.rpc import BuildId
from homellm.errors import HomeLLMError
from homellm.hardware.types import GpuDevice, HardwareProfile, LinkSpeed, RemoteDevice
from homellm.i18n import _
from homellm.pool.worker_link import Streams, main_link_identity, open_link
from homellm.serve.tls import TlsFiles
from homellm.split.handshake import WorkerFacts, greet_worker, probe
from homellm.split.peers import WorkerRecord, save_survey, split_worker


def worker_label(name: str) -> str:
    return _("worker {name}").format(name=name)


async def connect_worker(
    record: WorkerRecord, identity: TlsFiles, build: BuildId, mode: str
) -> tuple[Streams, WorkerFacts]:
    """A greeted link to ``record``'s worker (``mode``: ``rpc`` or ``probe``)."""
    what = worker_label(record.name)
    reader, writer = await open_link(record.host, record.port, identity, record.cert_pem, what)
    try:
        facts = await greet_worker(reader, writer, build, mode, what)
    except BaseException:
        writer.close()
        raise
    return (reader, writer), facts


async def measure_worker(record: WorkerRecord, identity: TlsFiles, build: BuildId) -> tuple[WorkerFacts, LinkSpeed]:
    (reader, writer), facts = await connect_worker(record, identity, build, "probe")
    try:
        speed = await probe(reader, writer)
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise HomeLLMError(_("the link to {what} broke while it was being measured ({error}); try again").format(
            what=worker_label(record.name), error=exc.__class__.__name__)) from None  # fmt: skip
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return facts, speed


def survey_worker(home: Path, name: str) -> WorkerRecord:
    """Greet and probe the worker now; store what it said and how fast the link is."""
    from homellm.engine.rpc import build_id, require_rpc

    require_rpc()
    record = split_worker(home, name)
    facts, speed = asyncio.run(measure_worker(record, main_link_identity(home), build_id()))
    record.facts, record.link = facts.to_json(), asdict(speed)
    save_survey(home, record)
    return record


def survey_joined_worker(home: Path, name: str, wait_s: float = 30.0) -> WorkerRecord | None:
    """The short probe right after pairing (``pair --worker`` runs it): None when the worker joined the pool
    rather than lending its device. Its link starts a moment after pairing ends, so this waits for it."""
    import time

    from homellm.pool.worker_link import LinkRefused
    from homellm.store import open_database
    from homellm.store.workers import Workers

    if not any(w.name == name and w.offer == "rpc" for w in Workers(open_database(home)).list()):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return survey_worker(home, name)
        except LinkRefused:
            raise
        except HomeLLMError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _vendor(description: str) -> str:
    text = description.lower()
    return next((v for v in ("nvidia", "amd", "apple", "intel") if v in text), "nvidia")


def remote_devices(record: WorkerRecord, catalog: Catalog) -> tuple[RemoteDevice, ...]:
    """The worker's devices as the advisor plans with them (from what it said last)."""
    from homellm.hardware.detect import match_catalog

    if record.facts is None or record.link is None:
        raise HomeLLMError(_("nothing is known yet about {what}: it has never been reached").format(
            what=worker_label(record.name)))  # fmt: skip
    facts = WorkerFacts.from_json(record.facts)
    link = LinkSpeed(**record.link)
    out = []
    for d in facts.devices:
        gpu = None
        if d.device.kind in ("gpu", "igpu"):
            described = GpuDevice(d.device.description, _vendor(d.device.description), d.device.total_bytes,
                                  unified=d.device.kind == "igpu")  # fmt: skip
            found = match_catalog(described, catalog)
            gpu = found if found.catalog_name else None
        kind = "cpu" if d.device.kind == "cpu" else "gpu"
        out.append(RemoteDevice(record.name, d.device.name, d.device.description, kind, d.offered_bytes, link, gpu,
                                facts.cpu, facts.cpu_calibration))  # fmt: skip
    return tuple(out)


def with_worker(hw: HardwareProfile, home: Path, name: str, catalog: Catalog, measure: bool) -> HardwareProfile:
    """``hw`` plus the worker's devices: as stored, or measured now (``measure``, or nothing stored yet).

    A worker that cannot be reached is planned with what it said last, and a note says when that was.
    """
    record = split_worker(home, name)
    notes = list(hw.notes)
    if measure or record.link is None:
        try:
            record = survey_worker(home, name)
        except HomeLLMError as exc:
            if record.link is None:
                raise
            date = str(record.link.get("measured_at", "?"))[:10]
            notes.append(_("{what} cannot be reached now ({error}); planning with what it reported on {date}").format(
                what=worker_label(name), error=exc, date=date))  # fmt: skip
    return replace(hw, remotes=remote_devices(record, catalog), notes=tuple(notes))

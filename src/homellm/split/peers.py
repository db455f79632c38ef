"""The workers a split can use, as the main gateway knows them: pairing's row, plus what was last learnt.

A split's worker is a machine that joined with ``homellm join MAIN --code CODE --rpc``: the pool's pairing
registered it in the ``workers`` table (:mod:`homellm.store.workers`) with the offer ``rpc``, the address it
paired from and its pinned certificate. What homellm learns by greeting it (its build, devices, offered
memory, CPU calibration) and by probing the link (round trip, bandwidth) is kept beside, in
``HOMELLM_HOME/link/surveys.json`` (0600), so ``plan --with`` works while the worker is off.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from homellm.errors import HomeLLMError, NotFoundError, UsageError
from homellm.i18n import _


@dataclass
class WorkerRecord:
    """A split's worker as the main machine knows it."""

    name: str
    host: str
    port: int
    cert_pem: str
    fingerprint: str
    facts: dict[str, Any] | None = None  # its last greeting: build, device, offered memory, calibration
    link: dict[str, Any] | None = None  # the last probe: LinkSpeed's fields

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _surveys(home: Path) -> Path:
    return home / "link" / "surveys.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise HomeLLMError(_("{path} is damaged; move it away (homellm measures the link again)").format(
            path=path)) from None  # fmt: skip
    return data if isinstance(data, dict) else {}


def split_worker(home: Path, name: str) -> WorkerRecord:
    """The worker ``name`` that lends its device (``join --rpc``), with what was last learnt about it."""
    from homellm.store import open_database
    from homellm.store.workers import Workers

    workers = [w for w in Workers(open_database(home)).list() if w.offer == "rpc"]
    found = next((w for w in workers if w.name == name), None)
    if found is None:
        if not workers:
            raise UsageError(
                _("no worker lends its device to this gateway yet: run `homellm pair --worker` here, then "
                  "`homellm join MAIN --code CODE --rpc` on the other machine")
            )  # fmt: skip
        raise NotFoundError(_("worker"), name, [w.name for w in workers])
    parts = urlsplit(found.url)
    record = WorkerRecord(found.name, parts.hostname or "", parts.port or 0, found.cert_pem, found.fingerprint)
    seen = _read(_surveys(home)).get(name)
    if isinstance(seen, dict) and seen.get("fingerprint") == found.fingerprint:  # not an earlier machine's
        record.facts, record.link = seen.get("facts"), seen.get("link")
    return record


def save_survey(home: Path, record: WorkerRecord) -> None:
    """Remember what the worker said and how fast its link was."""
    from homellm.store.db import private_folder

    path = _surveys(home)
    data = _read(path)
    data[record.name] = {"fingerprint": record.fingerprint, "facts": record.facts, "link": record.link}
    private_folder(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    with contextlib.suppress(OSError):
        tmp.chmod(0o600)
    tmp.replace(path)

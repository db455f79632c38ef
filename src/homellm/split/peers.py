"""Who is paired with whom for a link: the records pairing writes and the split reads.

On the **main** machine, one :class:`WorkerRecord` per worker: where its link listens and the certificate
it presents (pinned), plus what homellm last learnt from it (its device, the memory it offers, its build)
and the link's measured speed. On a **worker**, one :class:`MainRecord`: the certificate of the main
gateway it joined, the only one its link admits.

Pairing itself (``homellm join MAIN --code CODE``, the PAKE that proves both certificates) belongs to the
pool's join; it writes these records with :meth:`PeerStore.save_worker` / :meth:`PeerStore.save_main`.
Both files live in ``HOMELLM_HOME/link/`` (0600 in a 0700 folder), beside this machine's link certificate.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from homellm.errors import HomeLLMError, NotFoundError, UsageError
from homellm.i18n import _

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass
class WorkerRecord:
    """A worker as the main machine knows it."""

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


@dataclass
class MainRecord:
    """The main gateway a worker joined."""

    name: str
    cert_pem: str
    fingerprint: str


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(
            _("{name!r} cannot name a worker: use letters, digits, '.', '_' and '-' (up to 63)").format(name=name)
        )
    return name


class PeerStore:
    """``HOMELLM_HOME/link/peers.json``."""

    def __init__(self, home: Path) -> None:
        self.path = home / "link" / "peers.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            raise HomeLLMError(_("{path} is damaged; move it away and pair again").format(path=self.path)) from None
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        from homellm.store.db import private_folder

        private_folder(self.path.parent)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        with contextlib.suppress(OSError):
            tmp.chmod(0o600)
        tmp.replace(self.path)

    def workers(self) -> list[WorkerRecord]:
        return [WorkerRecord(**w) for w in self._read().get("workers", {}).values()]

    def worker(self, name: str) -> WorkerRecord:
        known = self._read().get("workers", {})
        if name not in known:
            if not known:
                raise UsageError(
                    _("no worker is paired with this machine; on the other machine run `homellm join {host} --code "
                      "CODE` (with a code from `homellm pair` here), then `homellm join --rpc`").format(host="MAIN")
                )  # fmt: skip
            raise NotFoundError("worker", name, list(known))
        return WorkerRecord(**known[name])

    def save_worker(self, record: WorkerRecord) -> None:
        check_name(record.name)
        data = self._read()
        data.setdefault("workers", {})[record.name] = asdict(record)
        self._write(data)

    def main(self) -> MainRecord | None:
        found = self._read().get("main")
        return MainRecord(**found) if isinstance(found, dict) else None

    def save_main(self, record: MainRecord) -> None:
        data = self._read()
        data["main"] = asdict(record)
        self._write(data)

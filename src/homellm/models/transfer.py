"""Resumable, verified download of one file.

Bytes go to ``<final>.<sha256 prefix>.partial``. A new attempt (after a dropped connection, a
Ctrl-C, or in a new process) re-hashes what is there and asks for the rest with ``Range:
bytes=N-``; a 200 instead of a 206 starts over, a 416 means the partial file is longer than the
remote one. Failed attempts are retried with exponential backoff as long as they bring no new
bytes; the file takes its final name only when its sha256 matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

from homellm.errors import HomeLLMError
from homellm.i18n import _
from homellm.models.sources import RemoteFile

CHUNK = 1 << 20
MAX_ATTEMPTS = 6  # attempts in a row that bring no new bytes (Ollama's maxRetries)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class TransferError(HomeLLMError):
    """The download could not complete; what was received is kept for the next attempt."""


class ChecksumError(HomeLLMError):
    """The bytes received are not the file the registry named."""


class Progress(Protocol):
    def start(self, total: int, completed: int) -> None: ...

    def advance(self, n: int) -> None: ...


class NoProgress:
    def start(self, total: int, completed: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


def partial_path(final: Path, sha256: str) -> Path:
    return final.with_name(f"{final.name}.{sha256[:12]}.partial")


def _hash_existing(path: Path) -> tuple[hashlib._Hash, int]:
    hasher = hashlib.sha256()
    size = 0
    with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher, size


class _Restart(Exception):
    """The server sent the whole file: throw the partial away and take it from the start."""


def download(
    remote: RemoteFile,
    final: Path,
    client: httpx.Client,
    progress: Progress | None = None,
    *,
    limit_bytes: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    backoff_s: float = 0.5,
) -> Path:
    """Download ``remote`` to ``final`` (or only its first ``limit_bytes`` into the partial file)."""
    progress = progress or NoProgress()
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final, remote.sha256)
    hasher, have = _hash_existing(partial)
    if have > remote.size:
        partial.unlink()
        hasher, have = hashlib.sha256(), 0
    target = remote.size if limit_bytes is None else min(remote.size, limit_bytes)
    progress.start(remote.size, have)
    failures = 0
    while have < target:
        before = have
        try:
            have = _fetch(remote, partial, client, hasher, have, target, progress)
        except _Restart:
            partial.unlink(missing_ok=True)
            hasher, have = hashlib.sha256(), 0
            progress.start(remote.size, 0)
            continue
        except (httpx.TransportError, TransferError) as exc:
            have = partial.stat().st_size if partial.exists() else 0
            failures = 0 if have > before else failures + 1
            if failures >= MAX_ATTEMPTS or (isinstance(exc, TransferError) and not _retryable(exc)):
                raise TransferError(
                    _("{name}: {error}; {have:,} of {total:,} bytes kept, run the same command to resume").format(
                        name=remote.ref.name, error=exc, have=have, total=remote.size
                    )
                ) from None
            sleep(min(backoff_s * 2**failures, 30.0))
            continue
        except OSError as exc:  # the disk, not the network: full, read-only, gone
            raise TransferError(
                _("cannot write {path}: {error}; what was downloaded is kept").format(path=partial, error=exc.strerror)
            ) from None
    if limit_bytes is not None and have < remote.size:
        return partial
    digest = hasher.hexdigest()
    if digest != remote.sha256:
        partial.unlink(missing_ok=True)
        raise ChecksumError(
            _("{name}: the download's sha256 is {got}, not {want}; it was discarded (nothing was saved). "
              "Run the command again; if it repeats, the registry or a proxy is serving a corrupt file").format(
                name=remote.ref.name, got=digest, want=remote.sha256)
        )  # fmt: skip
    os.replace(partial, final)
    return final


class _Status(TransferError):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _retryable(exc: TransferError) -> bool:
    return getattr(exc, "retryable", True)


def _fetch(
    remote: RemoteFile,
    partial: Path,
    client: httpx.Client,
    hasher: hashlib._Hash,
    have: int,
    target: int,
    progress: Progress,
) -> int:
    headers = dict(remote.headers)
    if have or target < remote.size:
        headers["Range"] = f"bytes={have}-" + (str(target - 1) if target < remote.size else "")
    with client.stream("GET", remote.url, headers=headers, follow_redirects=True) as resp:
        if resp.status_code == 416:
            raise _Restart  # our partial file is not a prefix of theirs
        if resp.status_code in (401, 403, 404, 410):
            raise _Status(_("the server answered {status}").format(status=resp.status_code), retryable=False)
        if resp.status_code >= 400:
            raise _Status(_("the server answered {status}").format(status=resp.status_code), retryable=True)
        if resp.status_code == 200:
            if have:
                raise _Restart  # it ignored the Range header
        elif resp.status_code == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
            if not m or int(m.group(1)) != have:
                raise _Status(_("the server sent a range we did not ask for"), retryable=True)
        else:
            raise _Status(_("unexpected status {status}").format(status=resp.status_code), retryable=True)
        with partial.open("ab") as out:
            for chunk in resp.iter_bytes(CHUNK):
                room = remote.size - have
                if len(chunk) > room:
                    chunk = chunk[:room]  # never write past the size the registry named
                out.write(chunk)
                hasher.update(chunk)
                have += len(chunk)
                progress.advance(len(chunk))
                if have >= target:
                    break
    if have < target:
        raise _Status(_("the connection closed early"), retryable=True)
    return have

"""The household page's data, for admin keys: keys and pairing codes, usage, the server and its GPU."""

from __future__ import annotations

import asyncio
import dataclasses
import platform
import time
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError, HomeLLMError
from homellm.i18n import _
from homellm.store.keys import ApiKey

if TYPE_CHECKING:
    from homellm.serve.app import Gateway

MAX_USAGE_DAYS = 366


def key_data(key: ApiKey, now: float) -> dict[str, Any]:
    """A key as the page shows it (never its secret or hash)."""
    return {
        "name": key.name,
        "prefix": key.prefix,
        "models": list(key.models) if key.models is not None else None,
        "admin": key.admin,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "active": key.active(now),
    }


def keys_and_codes(gw: Gateway) -> dict[str, Any]:
    now = time.time()
    codes = gw.db.execute(
        "SELECT id, nameplate, created_at, expires_at, models FROM pairing_codes WHERE expires_at > ? ORDER BY id",
        (now,),
    ).fetchall()
    import json

    return {
        "keys": [key_data(k, now) for k in gw.keys.list()],
        # an open code is shown by its nameplate only: its password stays with whoever holds the code
        "codes": [
            {
                "id": c["id"],
                "nameplate": c["nameplate"],
                "created_at": c["created_at"],
                "expires_at": c["expires_at"],
                "models": json.loads(c["models"]) if c["models"] is not None else None,
            }
            for c in codes
        ],
    }


def usage(gw: Gateway, days: int) -> dict[str, Any]:
    from homellm.store.usage import daily, summarize

    days = max(1, min(days, MAX_USAGE_DAYS))
    since = time.time() - days * 86400
    now = time.perf_counter()
    live = [
        {"key": c.key.name if c.key else None, "model": c.model, "route": c.label,
         "seconds": round(now - c.started, 1), "streaming": c.stats.first_token_at is not None}
        for c in list(gw.checks.running.values())
    ]  # fmt: skip
    return {
        "days": days,
        "by_key": summarize(gw.db, "key", since),
        "by_model": summarize(gw.db, "model", since),
        "daily": daily(gw.db, since),
        "live": live,
    }


async def server(gw: Gateway, key: ApiKey) -> dict[str, Any]:
    """The backend and its health, its models (available, loaded now), the GPUs and the doctor's findings.
    An admin key limited to some models sees those only, and not the backend's address (as in
    ``/homellm/health``)."""
    from homellm.hardware.nvidia import gpu_usage
    from homellm.host.doctor import audit
    from homellm.serve.network import lan_addresses

    backend = gw.backend
    health: dict[str, Any] = {"ok": True, "detail": ""}
    models: list[dict[str, Any]] = []
    loaded: list[dict[str, Any]] = []
    try:
        models = [{"name": m.name, "size": m.size, "details": m.details} for m in await backend.models()
                  if key.may_use(m.name)]  # fmt: skip
        loaded = [m for m in await backend.loaded() if key.may_use(str(m.get("name", "")))]
    except GatewayError as exc:
        health = {"ok": False, "detail": str(exc)}
    gpus = await asyncio.to_thread(gpu_usage)
    try:
        findings = await asyncio.to_thread(audit, gw.settings, gw.keys.list(), list(lan_addresses()), platform.system())
        doctor = [dataclasses.asdict(f) for f in findings]
    except HomeLLMError as exc:
        doctor = [{"status": "warn", "check": "doctor", "detail": str(exc), "fix": ""}]
    return {
        "backend": {
            "kind": backend.kind,
            "health": health,
            "describe": backend.describe() if key.models is None else _(backend.label),
        },
        "models": models,
        "loaded": [
            {
                "name": str(m.get("name", "")),
                "size": m.get("size"),
                "size_vram": m.get("size_vram"),
                "context_length": m.get("context_length"),
                "expires_at": m.get("expires_at"),
            }
            for m in loaded
        ],
        "gpus": [dataclasses.asdict(g) for g in gpus],
        "doctor": doctor,
        "fingerprint": gw.fingerprint,
    }

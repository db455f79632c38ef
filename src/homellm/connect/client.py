"""Talking to a paired gateway: pairing, manual connection, listing models, streaming answers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx

from homellm.connect.profiles import Profile, check_pin, fetch_certificate, normalize_target, pinned_context, split_url
from homellm.errors import HomeLLMError, UsageError
from homellm.serve.tls import fingerprint_of_pem


def server_certificate(url: str) -> tuple[str, str]:
    """(PEM, fingerprint) of the server at ``url``."""
    host, port = split_url(url)
    pem = fetch_certificate(host, port)
    return pem, fingerprint_of_pem(pem.encode())


def pair(url: str, code: str, pem: str, device: str | None = None) -> dict[str, Any]:
    """Trade a one-time code for a device key, over TLS pinned to ``pem``."""
    device = device or socket.gethostname().split(".")[0]
    try:
        with httpx.Client(base_url=url, verify=pinned_context(pem), timeout=15) as c:
            r = c.post("/homellm/pair", json={"code": code, "device": device})
    except httpx.HTTPError as exc:
        raise HomeLLMError(f"cannot reach {url}: {exc}") from None
    if r.status_code != 200:
        raise UsageError(_error_text(r))
    data: dict[str, Any] = r.json()
    return data


def _error_text(r: httpx.Response) -> str:
    try:
        err = r.json().get("error")
        return str(err.get("message") if isinstance(err, dict) else err)
    except ValueError:
        return f"HTTP {r.status_code}"


def client_for(profile: Profile, timeout: float | None = 30.0) -> httpx.Client:
    check_pin(profile)
    return httpx.Client(base_url=profile.url, verify=profile.ssl_context(),
                        headers={"Authorization": f"Bearer {profile.key}"}, timeout=timeout)  # fmt: skip


def list_models(profile: Profile) -> list[str]:
    with client_for(profile) as c:
        r = c.get("/api/tags")
    if r.status_code != 200:
        raise HomeLLMError(_error_text(r))
    return [m["name"] for m in r.json().get("models", [])]


def stream_chat(
    client: httpx.Client, model: str, messages: list[dict[str, str]], options: dict[str, Any] | None = None
) -> Iterator[str]:
    """The answer's text as it arrives (Ollama /api/chat NDJSON)."""
    body = {"model": model, "messages": messages, "stream": True, **({"options": options} if options else {})}
    with client.stream("POST", "/api/chat", json=body, timeout=httpx.Timeout(30, read=None)) as r:
        if r.status_code != 200:
            r.read()
            raise HomeLLMError(_error_text(r))
        for line in r.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            if "error" in chunk:
                raise HomeLLMError(str(chunk["error"]))
            text = (chunk.get("message") or {}).get("content", "")
            if text:
                yield text


def target_url(target: str) -> str:
    """A discovered service name, host, host:port or URL -> https URL."""
    from homellm.discovery import browse

    if target.startswith("homellm on ") or (" " in target and "://" not in target):
        for found in browse(3.0):
            if found.name == target:
                return found.url
        raise UsageError(f"no server named {target!r} answered on the LAN; try: homellm discover")
    return normalize_target(target)

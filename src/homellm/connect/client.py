"""Talking to a paired gateway: pairing, manual connection, listing models, streaming answers."""

from __future__ import annotations

import hmac
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx

from homellm.connect.profiles import Profile, check_pin, fetch_certificate, normalize_target, pinned_context, split_url
from homellm.errors import HomeLLMError, UsageError
from homellm.i18n import _
from homellm.protocol import pairing as wire
from homellm.serve.tls import fingerprint_of_pem
from homellm.untrusted import visible


def server_certificate(url: str) -> tuple[str, str]:
    """(PEM, fingerprint) of the server at ``url``."""
    host, port = split_url(url)
    pem = fetch_certificate(host, port)
    return pem, fingerprint_of_pem(pem.encode())


class PairingFailed(HomeLLMError):
    """The server and this device did not confirm the same certificate under the code: wrong code or a relay."""

    exit_code = 3


def pair(url: str, code: str, pem: str, device: str | None = None) -> dict[str, Any]:
    """Trade a one-time code for a device key over TLS pinned to ``pem`` (pairing v2, see protocol/pairing.py).

    Returns ``{"name", "key", "models"}``. The server has then proved it knows the code *and* presents
    ``pem`` to this device; a relay with its own certificate makes this raise :class:`PairingFailed`.
    """
    return _checked_grant(pair_exchange(url, code, pem, device))


def pair_exchange(
    url: str, code: str, pem: str, device: str | None = None, offer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The PAKE exchange of :func:`pair`; returns the server's grant as it decrypted (unchecked). A worker
    joining the pool (``homellm join``) sends ``offer`` sealed under the same key, in round 2."""
    parsed = wire.parse_code(code)
    name = wire.device_name(device) if device else wire.default_device(socket.gethostname())
    seen = fingerprint_of_pem(pem.encode())
    exchange = wire.ClientExchange(parsed, name)
    failed = PairingFailed(
        _(
            "pairing failed: the code was wrong, or someone between you and the server is relaying the connection "
            "(the certificate you see, {fingerprint}, is not the server's)"
        ).format(fingerprint=seen)
    )
    try:
        with httpx.Client(base_url=url, verify=pinned_context(pem), timeout=15) as c:
            r = c.post("/homellm/pair", json={"v": wire.VERSION, "nameplate": parsed.nameplate,
                                              "msg": wire.encode(exchange.message), "device": name})  # fmt: skip
            if r.status_code != 200:
                raise UsageError(_error_text(r))
            try:
                started = wire.fields(_json_of(r), wire.ANSWER_START_FIELDS)
                keys = exchange.finish(wire.decode(started["msg"], wire.MESSAGE_BYTES))
            except wire.PairingMessageError:
                raise failed from None
            mac = keys.confirm_client(seen)
            confirm = {"v": wire.VERSION, "session": started["session"], "confirm": wire.encode(mac)}
            if offer is not None:
                nonce, sealed = keys.seal(seen, offer, wire.OFFER)
                confirm |= {"nonce": wire.encode(nonce), "offer": wire.encode(sealed)}
            r = c.post("/homellm/pair/confirm", json=confirm)
    except httpx.HTTPError as exc:
        raise HomeLLMError(_("cannot reach {url}: {error}").format(url=url, error=visible(str(exc)))) from None
    if r.status_code == 403:
        raise failed
    if r.status_code != 200:
        raise UsageError(_error_text(r))
    try:
        answer = wire.fields(_json_of(r), wire.ANSWER_CONFIRM_FIELDS)
        proof = wire.decode(answer["confirm"], wire.MAC_BYTES)
        if not hmac.compare_digest(proof, keys.confirm_server(seen, mac)):
            raise failed
        grant = keys.open(seen, wire.decode(answer["nonce"], wire.NONCE_BYTES), wire.decode(answer["grant"]))
    except wire.PairingMessageError:
        raise failed from None
    return grant


def _json_of(r: httpx.Response) -> object:
    try:
        data: object = r.json()
    except ValueError:
        raise wire.PairingMessageError(_("the answer is not JSON")) from None
    return data


def _checked_grant(grant: dict[str, Any]) -> dict[str, Any]:
    """The decrypted grant, checked: it comes from the paired server, but is still data from the network."""
    name, key, models = grant.get("name"), grant.get("key"), grant.get("models")
    ok = (
        isinstance(name, str) and 0 < len(name) <= 64 and isinstance(key, str) and 0 < len(key) <= 512
        and not any(c.isspace() for c in key)
        and (models is None or (isinstance(models, list) and all(isinstance(m, str) for m in models)))
    )  # fmt: skip
    if not ok:
        raise HomeLLMError(_("the server's pairing answer is malformed; update homellm on both machines"))
    return {"name": visible(str(name), 64), "key": key, "models": [visible(m, 200) for m in models or []] or None}


def _error_text(r: httpx.Response) -> str:
    """The error message of a gateway answer, bounded and with control characters made visible."""
    try:
        err = r.json().get("error")
        return visible(str(err.get("message") if isinstance(err, dict) else err))
    except (ValueError, AttributeError):
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
        raise UsageError(
            _("no server named {target!r} answered on the LAN; try: homellm discover").format(target=target)
        )
    return normalize_target(target)

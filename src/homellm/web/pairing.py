"""Redeeming a pairing code from a browser: the code in exchange for a device key and a session.

A browser cannot run the PAKE of ``serve/pairing.py`` against the certificate: page scripts cannot see
the TLS certificate, so nothing can bind the code to it. Here the code is simply checked and spent,
under the same limits as the PAKE's attempts (per source address, per code and source, per code; the
same events table, so ``homellm pair`` reports the outcome), and the password is compared in constant
time. What this does and does not protect against is written in docs/gateway.md ("Pairing a browser").
"""

from __future__ import annotations

import hmac
from typing import Any

from homellm.errors import GatewayError, UsageError
from homellm.i18n import _
from homellm.protocol.pairing import device_name, parse_code
from homellm.serve.limits import RateLimiter, retry_after
from homellm.serve.pairing import _check_code_and_source, _check_source
from homellm.store.keys import ApiKey, KeyStore
from homellm.store.pairing import Pairing, source_of


def redeem(body: dict[str, Any], peer: str, store: Pairing, keys: KeyStore, starts: RateLimiter) -> ApiKey:
    """``{"code", "device"}`` -> the new device key (its secret is never sent: the browser gets a session)."""
    code_text, device_text = body.get("code"), body.get("device")
    if not isinstance(code_text, str) or not isinstance(device_text, str):
        raise GatewayError(400, _('send "code" and "device" as strings'))
    try:
        code = parse_code(code_text)
        device = device_name(device_text)
    except UsageError as exc:
        raise GatewayError(400, str(exc)) from None
    source = source_of(peer)
    _check_source(store, source)
    wait = starts.check(source)
    if wait:
        raise GatewayError(429, _("too many pairing attempts from your address; wait a minute"),
                           headers={"Retry-After": retry_after(wait)})  # fmt: skip
    found = store.open_code(code.nameplate)
    if found is None:
        store.record_failure(None, source, device)
        raise GatewayError(401, _("the pairing code is wrong, used or expired; ask for a new one"))
    _check_code_and_source(store, found.id, source)
    if not hmac.compare_digest(found.code.password.encode(), code.password.encode()):
        store.record_failure(found.id, source, device)
        raise GatewayError(401, _("the pairing code is wrong, used or expired; ask for a new one"))
    if found.worker is not None:  # it would make a device key with the worker's (unlimited) models
        raise GatewayError(400, _("this code is for `homellm join` on a worker machine"))
    granted = store.redeem(found.id, device, keys, source)
    if granted is None:
        raise GatewayError(401, _("the pairing code was just used, withdrawn or expired; ask for a new one"))
    return granted[0]

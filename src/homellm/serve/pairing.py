"""``POST /homellm/pair`` and ``/homellm/pair/confirm``: the server's side of pairing v2.

Pure handlers: each takes the parsed body, the peer address, the stores and this server's certificate
fingerprint, and returns ``(status, json)`` or raises :class:`GatewayError`. The protocol is in
``protocol/pairing.py``; codes and attempts in ``store/pairing.py``.

Round 1 (``start``) validates everything that could be refused later (the device name first) before any
work, runs SPAKE2_B and keeps the key in memory for at most a minute. Round 2 (``confirm``) checks the
device's MAC against *this* server's certificate: a wrong code or a relay with its own certificate fails
here, is counted, and the code stays open for the household; a match spends the code and answers with
the device key sealed under the SPAKE2 key.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError, UsageError
from homellm.i18n import _
from homellm.protocol import pairing as wire
from homellm.serve.limits import RateLimiter, retry_after
from homellm.serve.tls import fingerprint_of_pem
from homellm.store.keys import KeyStore
from homellm.store.pairing import (
    FAILURE_WINDOW,
    MAX_FAILURES_PER_CODE_AND_SOURCE,
    MAX_FAILURES_PER_SOURCE,
    Pairing,
    source_of,
)

MAX_BODY_BYTES = 4096
SESSION_TTL = 60.0
MAX_SESSIONS = 256
MAX_SESSIONS_PER_SOURCE = 4
STARTS_PER_MINUTE = 30  # per source: each start costs the server a SPAKE2 computation

if TYPE_CHECKING:
    from homellm.store.workers import Workers

Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Session:
    code_id: int
    source: str
    device: str
    keys: wire.PairingKeys
    expires_at: float
    worker: bool = False  # the code registers a machine joining the pool, not a device key


class PairSessions:
    """Round-1 state between the two requests: in memory only, single use, a minute at most, bounded."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.starts = RateLimiter(STARTS_PER_MINUTE)

    def _expire(self, now: float) -> None:
        for sid in [s for s, v in self._sessions.items() if v.expires_at <= now]:
            del self._sessions[sid]

    def add(self, session: Session) -> str:
        with self._lock:
            self._expire(time.monotonic())
            mine = [sid for sid, s in self._sessions.items() if s.source == session.source]
            if len(mine) >= MAX_SESSIONS_PER_SOURCE:
                del self._sessions[mine[0]]  # a source's oldest attempt gives way to its newest
            elif len(self._sessions) >= MAX_SESSIONS:
                raise GatewayError(429, _("too many pairing attempts are in progress; try again in a minute"),
                                   headers={"Retry-After": str(int(SESSION_TTL))})  # fmt: skip
            sid = secrets.token_urlsafe(24)
            self._sessions[sid] = session
            return sid

    def take(self, sid: str) -> Session | None:
        with self._lock:
            session = self._sessions.pop(sid, None)
        return session if session is not None and session.expires_at > time.monotonic() else None

    def __len__(self) -> int:
        return len(self._sessions)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a pairing request: at most 4 KiB, read by the gateway's strict JSON reader."""
    from homellm.serve.body import parse_object

    if len(raw) > MAX_BODY_BYTES:
        raise GatewayError(413, _("a pairing request is at most {n} bytes").format(n=MAX_BODY_BYTES))
    return parse_object(raw)


def _bad(exc: ValueError) -> GatewayError:
    return GatewayError(400, str(exc))


def _check_source(store: Pairing, source: str) -> None:
    if store.source_failures(source) >= MAX_FAILURES_PER_SOURCE:
        raise GatewayError(
            429,
            _("too many wrong pairing attempts from your address; wait {m} minutes").format(
                m=int(FAILURE_WINDOW // 60)
            ),
            headers={"Retry-After": str(int(FAILURE_WINDOW))},
        )


def _check_code_and_source(store: Pairing, code_id: int, source: str) -> None:
    if store.code_failures(code_id, source) >= MAX_FAILURES_PER_CODE_AND_SOURCE:
        raise GatewayError(
            429,
            _("too many wrong attempts at this code from your address; check the code, or run `homellm pair` again"),
        )


def start(body: object, peer: str, store: Pairing, sessions: PairSessions, fingerprint: str | None) -> Answer:
    """Round 1: ``{"v": 2, "nameplate", "msg", "device"}`` -> ``{"v": 2, "session", "msg"}``."""
    try:
        given = wire.fields(body, wire.START_FIELDS)
    except wire.PairingMessageError as exc:
        raise _bad(exc) from None
    try:
        device = wire.device_name(given["device"])
    except UsageError as exc:
        raise GatewayError(400, str(exc)) from None
    try:
        msg_a = wire.decode(given["msg"], wire.MESSAGE_BYTES)
    except wire.PairingMessageError as exc:
        raise _bad(exc) from None
    if fingerprint is None:
        raise GatewayError(400, _("pairing needs the gateway to serve TLS: the code confirms its certificate"))
    source = source_of(peer)
    _check_source(store, source)
    wait = sessions.starts.check(source)
    if wait:
        raise GatewayError(429, _("too many pairing attempts from your address; wait a minute"),
                           headers={"Retry-After": retry_after(wait)})  # fmt: skip
    code = store.open_code(given["nameplate"].upper())
    if code is None:
        store.record_failure(None, source, device)
        raise GatewayError(401, _("the pairing code is wrong, used or expired; run `homellm pair` on the server"))
    _check_code_and_source(store, code.id, source)
    try:
        msg_b, keys = wire.server_exchange(code.code, given["device"], msg_a)
    except wire.PairingMessageError as exc:
        raise _bad(exc) from None
    expires = time.monotonic() + min(SESSION_TTL, max(code.expires_at - time.time(), 0.0))
    sid = sessions.add(Session(code.id, source, device, keys, expires, code.worker is not None))
    return 200, {"v": wire.VERSION, "session": sid, "msg": wire.encode(msg_b)}


@dataclass(frozen=True)
class JoinContext:
    """What the server needs to register a joining worker: the pool's store and the link certificate
    the main gateway presents to its workers (made when first needed)."""

    workers: Workers
    link_cert_pem: Callable[[], str]


def confirm(
    body: object, peer: str, store: Pairing, keys: KeyStore, sessions: PairSessions, fingerprint: str | None,
    join: JoinContext | None = None,
) -> Answer:  # fmt: skip
    """Round 2: ``{"v": 2, "session", "confirm"}`` -> ``{"v": 2, "confirm", "nonce", "grant"}``; a joining
    worker adds ``nonce`` and ``offer`` (its sealed offer) and is answered with the main's link certificate."""
    worker = isinstance(body, dict) and "offer" in body
    try:
        given = wire.fields(body, wire.CONFIRM_WORKER_FIELDS if worker else wire.CONFIRM_FIELDS)
        mac = wire.decode(given["confirm"], wire.MAC_BYTES)
    except wire.PairingMessageError as exc:
        raise _bad(exc) from None
    source = source_of(peer)
    session = sessions.take(given["session"])
    if session is None or session.source != source or fingerprint is None:
        raise GatewayError(401, _("this pairing attempt expired or was already answered; run `homellm connect` again"))
    _check_source(store, source)
    _check_code_and_source(store, session.code_id, source)  # attempts opened before the limit was reached
    if not hmac.compare_digest(mac, session.keys.confirm_client(fingerprint)):
        store.record_failure(session.code_id, source, session.device)
        raise GatewayError(
            403,
            _(
                "pairing failed: the code is wrong, or someone between the device and this server is relaying the "
                "connection (the device did not confirm this server's certificate {fingerprint})"
            ).format(fingerprint=fingerprint),
        )
    if worker != session.worker:
        wrong = (
            _("this code is for `homellm join` on a worker machine")
            if session.worker
            else _("this code is for a device (`homellm connect`); run `homellm pair --worker`")
        )
        raise GatewayError(400, wrong)
    if worker:
        if join is None:
            raise GatewayError(400, _("this gateway does not take workers"))
        grant = _join(given, peer, session, store, join, fingerprint, source)
    else:
        granted = store.redeem(session.code_id, session.device, keys, source)
        if granted is None:
            raise GatewayError(401, _("the pairing code was just used, withdrawn or expired; run `homellm pair` again"))
        key, secret = granted
        grant = {"name": key.name, "key": secret, "models": list(key.models) if key.models is not None else None}
    nonce, sealed = session.keys.seal(fingerprint, grant)
    return 200, {
        "v": wire.VERSION,
        "confirm": wire.encode(session.keys.confirm_server(fingerprint, mac)),
        "nonce": wire.encode(nonce),
        "grant": wire.encode(sealed),
    }


def _join(
    given: dict[str, str], peer: str, session: Session, store: Pairing, join: JoinContext, fingerprint: str,
    source: str,
) -> dict[str, Any]:  # fmt: skip
    """Open the worker's sealed offer (it proves the code, like the MAC), check it, register the worker
    at the address it paired from, and grant it the certificate this gateway will present to it."""
    from homellm.store.workers import OFFERS

    try:
        offer = session.keys.open(fingerprint, wire.decode(given["nonce"], wire.NONCE_BYTES),
                                  wire.decode(given["offer"]), wire.OFFER)  # fmt: skip
    except wire.PairingMessageError as exc:
        raise _bad(exc) from None
    port, kind, pem = offer.get("port"), offer.get("offer"), offer.get("cert")
    if type(port) is not int or not 0 < port < 65536 or kind not in OFFERS or not isinstance(pem, str):
        raise GatewayError(400, _("the worker's offer is malformed; update homellm on both machines"))
    try:
        worker_fp = fingerprint_of_pem(pem.encode())
    except ValueError:
        raise GatewayError(400, _("the worker's certificate is not a PEM certificate")) from None
    address = peer.split("%")[0]
    host = f"[{address}]" if ":" in address else address
    worker = store.redeem_worker(session.code_id, session.device, f"https://{host}:{port}", kind, pem, worker_fp,
                                 join.workers, source)  # fmt: skip
    if worker is None:
        raise GatewayError(401, _("the pairing code was just used, withdrawn or expired; run `homellm pair` again"))
    return {"name": worker.name, "worker": True, "client_cert": join.link_cert_pem()}


def handle(
    path: str, body: object, peer: str, store: Pairing, keys: KeyStore, sessions: PairSessions,
    fingerprint: str | None, join: JoinContext | None = None,
) -> Answer:  # fmt: skip
    """Dispatch by path: ``/homellm/pair`` is round 1, ``/homellm/pair/confirm`` round 2."""
    if path.endswith("/confirm"):
        return confirm(body, peer, store, keys, sessions, fingerprint, join)
    return start(body, peer, store, sessions, fingerprint)

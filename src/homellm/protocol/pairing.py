"""Pairing, version 2: a short code, a PAKE keyed by it, and both sides confirming the TLS certificate.

The code ``homellm pair`` shows, ``ABCD-EFGH``, is two things. ``AB`` is the *nameplate*: it says which
open code a request is about and travels in clear (inside TLS). ``CDEFGH`` is the *password*: it never
travels. Both sides run SPAKE2 (the ``spake2`` package, Ed25519 group) keyed by it, then prove to each
other, with MACs under the SPAKE2 key, which certificate fingerprint they see on this connection:

1. client -> server ``{"v": 2, "nameplate", "msg": b64(SPAKE2_A), "device"}``;
   server -> client ``{"v": 2, "session", "msg": b64(SPAKE2_B)}``.
2. client -> server ``{"v": 2, "session", "confirm": b64(confirm_client)}``; the server checks it against
   its own certificate and, if it matches, answers ``{"v": 2, "confirm": b64(confirm_server), "nonce",
   "grant": b64(AES-256-GCM(device key))}``. The client checks ``confirm_server`` with the fingerprint it
   sees, then decrypts the grant.

A relay with its own certificate never learns the password, cannot finish SPAKE2 with either side, and
makes the MACs disagree: pairing fails on both ends. A recorded transcript gives no way to test a guess
offline; every guess costs one online attempt, and the gateway counts them.

Pure: no I/O. Shared by the gateway (``serve/pairing.py``) and the client (``connect/client.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any

from homellm.errors import UsageError
from homellm.i18n import _

VERSION = 2
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L
NAMEPLATE_LENGTH = 2
PASSWORD_LENGTH = 6
MESSAGE_BYTES = 33  # a SPAKE2 message in the Ed25519 group
MAC_BYTES = 32
NONCE_BYTES = 12
MAX_GRANT_BYTES = 4096
SESSION_LENGTH = 32
DEVICE_LENGTH = 40  # leaves room for a "-NNN" suffix inside a 64-character key name

GRANT = b"grant"  # the server's answer, sealed
OFFER = b"worker offer"  # what a joining worker offers (its port, its backend, its certificate), sealed

_ID_CLIENT = b"homellm-pair v2 client"
_ID_SERVER = b"homellm-pair v2 server"


class PairingMessageError(ValueError):
    """A pairing message is not what the protocol allows (the gateway answers 400)."""


@dataclass(frozen=True)
class PairingCode:
    nameplate: str
    password: str

    def __str__(self) -> str:
        whole = self.nameplate + self.password
        return f"{whole[:4]}-{whole[4:]}"

    def spake2_password(self) -> bytes:
        return f"homellm-pair:{self.nameplate}:{self.password}".encode()


def random_code(taken_nameplates: set[str]) -> PairingCode:
    """A fresh code whose nameplate is not one of ``taken_nameplates``."""
    free = [a + b for a in ALPHABET for b in ALPHABET if a + b not in taken_nameplates]
    if not free:
        raise UsageError(_("every pairing nameplate is in use; wait for open codes to expire"))
    return PairingCode(secrets.choice(free), "".join(secrets.choice(ALPHABET) for _ in range(PASSWORD_LENGTH)))


def parse_code(text: str) -> PairingCode:
    """``abcd-efgh``, ``ABCD EFGH`` or ``ABCDEFGH`` -> the code; a UsageError says what a code looks like."""
    raw = "".join(text.split()).replace("-", "").upper()
    if len(raw) != NAMEPLATE_LENGTH + PASSWORD_LENGTH or any(c not in ALPHABET for c in raw):
        raise UsageError(
            _("{code!r} is not a pairing code: it has 8 letters and digits like ABCD-EFGH (no 0, 1, I, L or O)").format(
                code=text[:40]
            )
        )
    return PairingCode(raw[:NAMEPLATE_LENGTH], raw[NAMEPLATE_LENGTH:])


_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]*")
_NOT_DEVICE = re.compile(r"[^A-Za-z0-9._@-]+")


def device_name(text: str) -> str:
    """The key name a device asks for, normalised (NFKC, single spaces); a UsageError if it cannot be one.

    A key name starts with a letter or digit and holds letters, digits, spaces and ``. _ @ -``; a device
    name is at most 40 characters of that, so ``-2`` .. ``-999`` can tell two devices apart.
    """
    name = re.sub(" +", " ", unicodedata.normalize("NFKC", text).strip())
    if not name or len(name) > DEVICE_LENGTH or not _DEVICE.fullmatch(name):
        raise UsageError(
            _(
                "the device name {name!r} cannot be used: it must start with a letter or digit, hold only letters, "
                "digits, spaces and . _ @ -, and be at most {n} characters (give --device NAME)"
            ).format(name=name[:60], n=DEVICE_LENGTH)
        )
    return name


def default_device(hostname: str) -> str:
    """This machine's host name made into a usable device name."""
    base = _NOT_DEVICE.sub("-", hostname.split(".")[0]).strip("-._@")[:DEVICE_LENGTH].rstrip("-._@")
    return base or "device"


def _frame(*parts: bytes) -> bytes:
    """Length-prefixed concatenation, so no two different inputs give the same bytes."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _subkey(key: bytes, purpose: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"homellm-pair v2 " + purpose).derive(key)


@dataclass(frozen=True)
class PairingKeys:
    """The SPAKE2 key of one attempt and the transcript it is bound to."""

    key: bytes
    transcript: bytes

    def confirm_client(self, fingerprint: str) -> bytes:
        data = _frame(b"homellm-pair client", fingerprint.encode(), self.transcript)
        return hmac.new(_subkey(self.key, b"client confirmation"), data, hashlib.sha256).digest()

    def confirm_server(self, fingerprint: str, confirm_client: bytes) -> bytes:
        data = _frame(b"homellm-pair server", fingerprint.encode(), self.transcript, confirm_client)
        return hmac.new(_subkey(self.key, b"server confirmation"), data, hashlib.sha256).digest()

    def _aad(self, fingerprint: str, purpose: bytes) -> bytes:
        return _frame(b"homellm-pair " + purpose, fingerprint.encode(), self.transcript)

    def seal(self, fingerprint: str, grant: dict[str, Any], purpose: bytes = GRANT) -> tuple[bytes, bytes]:
        """(nonce, ciphertext) of the grant under a key derived from the SPAKE2 key. ``purpose`` is
        :data:`GRANT` (server to device) or :data:`OFFER` (a joining worker to the server): each
        direction has its own key."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(grant, separators=(",", ":")).encode()
        return nonce, AESGCM(_subkey(self.key, purpose)).encrypt(nonce, plain, self._aad(fingerprint, purpose))

    def open(self, fingerprint: str, nonce: bytes, sealed: bytes, purpose: bytes = GRANT) -> dict[str, Any]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            plain = AESGCM(_subkey(self.key, purpose)).decrypt(nonce, sealed, self._aad(fingerprint, purpose))
            grant = json.loads(plain)
        except (InvalidTag, ValueError):
            raise PairingMessageError(_("the grant does not decrypt")) from None
        if not isinstance(grant, dict):
            raise PairingMessageError(_("the grant is not a JSON object"))
        return grant


def _transcript(nameplate: str, device: str, msg_a: bytes, msg_b: bytes) -> bytes:
    return _frame(b"homellm-pair v2", nameplate.encode(), device.encode(), msg_a, msg_b)


class ClientExchange:
    """The device's side: SPAKE2_A with the password; ``finish`` with the server's message."""

    def __init__(self, code: PairingCode, device: str) -> None:
        from spake2 import SPAKE2_A

        self.code = code
        self.device = device
        self._spake = SPAKE2_A(code.spake2_password(), idA=_ID_CLIENT, idB=_ID_SERVER)
        self.message: bytes = self._spake.start()

    def finish(self, msg_b: bytes) -> PairingKeys:
        key = _spake2_finish(self._spake, msg_b)
        return PairingKeys(key, _transcript(self.code.nameplate, self.device, self.message, msg_b))


def server_exchange(code: PairingCode, device: str, msg_a: bytes) -> tuple[bytes, PairingKeys]:
    """The server's side in one step: (SPAKE2_B message, keys), from the client's message."""
    from spake2 import SPAKE2_B

    spake = SPAKE2_B(code.spake2_password(), idA=_ID_CLIENT, idB=_ID_SERVER)
    msg_b: bytes = spake.start()
    key = _spake2_finish(spake, msg_a)
    return msg_b, PairingKeys(key, _transcript(code.nameplate, device, msg_a, msg_b))


def _spake2_finish(spake: Any, message: bytes) -> bytes:
    from spake2 import SPAKEError

    if len(message) != MESSAGE_BYTES:
        raise PairingMessageError(_("a SPAKE2 message is {n} bytes").format(n=MESSAGE_BYTES))
    try:
        key: bytes = spake.finish(message)
    except (SPAKEError, ValueError, AssertionError):  # off sides, reflection, not a group element
        raise PairingMessageError(_("the SPAKE2 message is not valid")) from None
    return key


# ---- wire messages ------------------------------------------------------------------------------


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(text: str, size: int | None = None, limit: int = MAX_GRANT_BYTES) -> bytes:
    """Strict base64; ``size`` bytes exactly when given."""
    if len(text) > (limit + 2) // 3 * 4:
        raise PairingMessageError(_("a base64 field is too long"))
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PairingMessageError(_("a field is not base64")) from None
    if size is not None and len(data) != size:
        raise PairingMessageError(_("a field must hold {n} bytes").format(n=size))
    return data


def fields(body: object, bounds: dict[str, int]) -> dict[str, str]:
    """The string fields of a v2 message, each at most ``bounds[name]`` characters; nothing else allowed."""
    if not isinstance(body, dict):
        raise PairingMessageError(_("a pairing message is a JSON object"))
    version = body.get("v")
    if type(version) is not int or version != VERSION:
        raise PairingMessageError(
            _('this server speaks pairing version 2 (send "v": 2); update homellm on the device if it is older')
        )
    unknown = sorted(str(k)[:40] for k in body if k != "v" and k not in bounds)
    if unknown:
        raise PairingMessageError(_("unexpected field {name!r}").format(name=unknown[0]))
    out: dict[str, str] = {}
    for name, limit in bounds.items():
        value = body.get(name)
        if not isinstance(value, str):
            raise PairingMessageError(_('"{name}" must be a string').format(name=name))
        if len(value) > limit:
            raise PairingMessageError(_('"{name}" is longer than {n} characters').format(name=name, n=limit))
        out[name] = value
    return out


START_FIELDS = {"nameplate": 8, "msg": 64, "device": 200}
CONFIRM_FIELDS = {"session": 64, "confirm": 64}
# a worker joining the pool (`homellm join`) adds its sealed offer to round 2
CONFIRM_WORKER_FIELDS = {**CONFIRM_FIELDS, "nonce": 24, "offer": (MAX_GRANT_BYTES + 2) // 3 * 4}
ANSWER_START_FIELDS = {"session": 64, "msg": 64}
ANSWER_CONFIRM_FIELDS = {"confirm": 64, "nonce": 24, "grant": (MAX_GRANT_BYTES + 2) // 3 * 4}

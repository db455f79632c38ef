"""TLS: a self-signed certificate made on first start (SANs for every name and address of this
machine), or the user's own; and its SHA-256 fingerprint for pinning."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from homellm.errors import UsageError
from homellm.i18n import _


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    fingerprint: str
    generated: bool


def fingerprint_of_pem(pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(pem)
    return format_fingerprint(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())


def format_fingerprint(hexdigest: str) -> str:
    h = hexdigest.upper()
    return "SHA256:" + ":".join(h[i : i + 2] for i in range(0, len(h), 2))


def generate_self_signed(
    cert_path: Path, key_path: Path, dns_names: list[str], ips: list[str], days: int = 825, client: bool = False
) -> None:
    """A self-signed leaf for a server, or with ``client`` for a TLS client (the main gateway's side of a
    worker link: OpenSSL refuses a client certificate whose extended key usage says server only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "homellm")])  # fmt: skip
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # a leaf, not a CA: pinned by clients, it can vouch for nothing but this server's own names
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    from homellm.store.db import private_folder

    private_folder(cert_path.parent)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_tls(home: Path, cert: Path | None, key: Path | None) -> TlsFiles:
    """The user's certificate and key, or homellm's own (generated once, kept in HOME/tls)."""
    from homellm.serve.network import hostname, lan_addresses

    if cert or key:
        if not (cert and key):
            raise UsageError(_("give both --tls-cert and --tls-key"))
        for p in (cert, key):
            if not p.is_file():
                raise UsageError(_("no such file: {path}").format(path=p))
        try:
            return TlsFiles(cert, key, fingerprint_of_pem(cert.read_bytes()), generated=False)
        except ValueError as exc:
            raise UsageError(_("{cert} is not a PEM certificate ({exc})").format(cert=cert, exc=exc)) from None
    folder = home / "tls"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    generated = False
    if not (cert_path.exists() and key_path.exists()):
        name = hostname()
        generate_self_signed(cert_path, key_path, [name, f"{name}.local", "localhost"],
                             ["127.0.0.1", "::1", *lan_addresses()])  # fmt: skip
        generated = True
    return TlsFiles(cert_path, key_path, fingerprint_of_pem(cert_path.read_bytes()), generated)


def certificate_expiry(cert_path: Path) -> datetime.datetime:
    from cryptography import x509

    expiry: datetime.datetime = x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc
    return expiry

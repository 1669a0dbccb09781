"""Certificates for Pyro5's two-way TLS, made with ``cryptography`` (no openssl CLI).

One CA and one certificate shared by every masa process of a deployment: each side
checks that the other's certificate is signed by the CA, on top of the shared-secret
handshake.  The CA's own key is not kept: a new CA means new certificates on every
machine, so an existing ``ca.pem`` is replaced only when asked to.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from masa.errors import MasaError


class CertificatesExist(MasaError):
    """``make_certificates`` would replace an existing CA."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "masa"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600 whether or not it existed (``os.open``'s mode only
    applies to a file it creates): a new file beside it, replacing it in one step."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_certificates(directory: Path, hosts: list[str], days: int = 825,
                      overwrite: bool = False) -> list[Path]:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` (0600) into ``directory``.

    With ``overwrite=False`` an existing ``ca.pem`` is left alone and
    :class:`CertificatesExist` raised before anything is written: the certificates every
    other machine holds are signed by that CA."""
    paths = [directory / "ca.pem", directory / "cert.pem", directory / "key.pem"]
    if not overwrite and paths[0].exists():
        raise CertificatesExist(
            f"{paths[0]} exists: a new CA would invalidate the certificates of every machine "
            f"that uses it; delete it first to make a new CA")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("masa CA")).issuer_name(_name("masa CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("masa")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write_private(paths[2], key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[0].write_bytes(ca.public_bytes(pem))
    return paths

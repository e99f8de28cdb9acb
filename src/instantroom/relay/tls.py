"""TLS for the relay: a certificate made in memory at start (``--tls-self-signed``).

For a LAN with no domain name: the relay makes a fresh ECDSA P-256 key and a certificate
for localhost, 127.0.0.1, ::1 and the machine's hostname, valid 30 days, and logs the
certificate's SHA-256 fingerprint. Browsers warn about it (nobody vouches for it); users
compare the fingerprint shown by the browser with the logged one before going on.

Neither the key nor the certificate is written anywhere. ``SSLContext.load_cert_chain``
takes only a file name: on Linux it gets an anonymous file in memory (``memfd_create``),
elsewhere, for the moment it loads, a file in a private temporary directory (mode 0700,
the file 0600) that is deleted right after.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import ConfigError, RelayConfig

VALIDITY = datetime.timedelta(days=30)
_NAMES = ("localhost",)
_ADDRESSES = ("127.0.0.1", "::1")


def check_tls_options(config: RelayConfig, *, shared_port: bool = False) -> None:
    """Refuse settings that do not fit together (``shared_port``: one of --workers)."""
    if config.tls_self_signed and (config.tls_cert or config.tls_key):
        raise ConfigError(
            "--tls-self-signed makes its own certificate: leave out --tls-cert and --tls-key "
            "(or drop --tls-self-signed to serve your own certificate)."
        )
    if config.tls_self_signed and shared_port:
        raise ConfigError(
            "--tls-self-signed would give each of the --workers its own certificate: "
            "use --tls-cert/--tls-key, or one worker."
        )


def certificate_context(config: RelayConfig) -> ssl.SSLContext:
    """A server TLS context with ``--tls-cert``/``--tls-key``; ConfigError, naming the files
    and why, if they cannot be loaded (unreadable, missing, a key of another certificate)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key or None)
    except OSError as exc:  # ssl.SSLError too; either may name no file
        named = " and ".join(filter(None, (config.tls_cert, config.tls_key)))
        why = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(f"--tls-cert/--tls-key: cannot load {named} ({why}).") from None
    return context


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as browsers show it: AB:CD:...:EF."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex(":").upper()


def _hostname() -> str | None:
    name = socket.gethostname().strip().rstrip(".")
    if not name or name in _NAMES or not name.isascii():
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


def make_self_signed() -> tuple[bytes, bytes]:
    """A fresh certificate and its private key, both PEM, made in memory."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [*_NAMES]
    if (host := _hostname()) is not None:
        names.append(host)
    alternative: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternative += [x509.IPAddress(ipaddress.ip_address(a)) for a in _ADDRESSES]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a phone's clock may lag
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed_context() -> tuple[ssl.SSLContext, str]:
    """A server TLS context with a fresh self-signed certificate, and its fingerprint."""
    cert_pem, key_pem = make_self_signed()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, key_pem + cert_pem)
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return context, fingerprint(der)


def _load_chain(context: ssl.SSLContext, pem: bytes) -> None:
    """``load_cert_chain`` takes only a file name: give it one no disk holds where the
    system allows (an anonymous in-memory file), else a private temporary one."""
    if hasattr(os, "memfd_create"):  # Linux: a file in memory, named through /proc
        try:
            descriptor = os.memfd_create("instantroom-tls", os.MFD_CLOEXEC)
            try:
                with os.fdopen(os.dup(descriptor), "wb") as file:
                    file.write(pem)
                context.load_cert_chain(f"/proc/self/fd/{descriptor}")
            finally:
                os.close(descriptor)
            return
        except OSError:  # no /proc mounted, or memfd_create not allowed: as elsewhere
            pass
    # Elsewhere: mkdtemp makes the directory 0700; the file is created 0600, and both are
    # gone when the block ends.
    with tempfile.TemporaryDirectory(prefix="instantroom-tls-") as private:
        path = os.path.join(private, "self-signed.pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        context.load_cert_chain(path)

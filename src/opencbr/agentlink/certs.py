"""The installation's certificate authority for agents: an EC P-256 CA, the certificates it issues
(an agent's server certificate, the service's client certificate) and their fingerprints.

Both ends pin: the agent trusts only the CA it was enrolled with, the service trusts an agent only with
the certificate fingerprint recorded at enrolment (so revoking an agent is deleting one catalog row)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_authority(name: str = "OpenCBR agents CA") -> tuple[str, str]:
    """A new CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"{name} {os.urandom(4).hex()}")  # two installations never share a subject
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)


def new_key_and_csr(common_name: str) -> tuple[str, str]:
    """A fresh key and a certificate signing request for it: (key PEM, CSR PEM). The key never leaves
    the machine that made it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name)).sign(key, hashes.SHA256())
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM).decode()


def sign_csr(ca_cert_pem: str, ca_key_pem: str, csr_pem: str, *, common_name: str, server: bool,
             client: bool, days: int = 825) -> str:
    """Issue a certificate for the CSR's key. The subject is ``common_name`` whatever the CSR asked
    for (the issuer decides who the holder is), and the CSR's signature must be valid."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        key = _acceptable_key(csr.public_key())
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:  # (a curve OpenSSL cannot use: not a ValueError)
        raise ValueError(f"not a certificate signing request we sign: {e}") from None
    if not valid:
        raise ValueError("the certificate signing request's signature is not valid")
    return _issue_for(ca_cert_pem, ca_key_pem, key, common_name, server=server, client=client, days=days)


#: The keys an agent's certificate may have: what ``new_key_and_csr`` makes (P-256), and the other strong
#: ones a host's own tooling might (the installation's CA signs no key weaker than its own).
ACCEPTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
MIN_RSA_BITS = 2048


def _acceptable_key(key):
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ACCEPTED_CURVES:
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ValueError(f"its key must be EC ({', '.join(ACCEPTED_CURVES)}), RSA of {MIN_RSA_BITS} bits or more, or "
                     f"Ed25519, not {type(key).__name__.removeprefix('_')}"
                     + (f" on {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else "")
                     + (f" of {key.key_size} bits" if isinstance(key, rsa.RSAPublicKey) else ""))


def issue(ca_cert_pem: str, ca_key_pem: str, common_name: str, *, server: bool, client: bool,
          days: int = 825) -> tuple[str, str]:
    """A new key and its certificate: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue_for(ca_cert_pem, ca_key_pem, key.public_key(), common_name, server=server, client=client,
                      days=days)
    return cert, _key_pem(key)


def _issue_for(ca_cert_pem: str, ca_key_pem: str, public_key, common_name: str, *, server: bool, client: bool,
               days: int) -> str:
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    now = _now()
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if server:
        # Names are not checked (the peer is identified by CN and pinned fingerprint), but TLS
        # libraries want a subjectAltName on a server certificate.
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(cert_pem: str | bytes) -> str:
    """``sha256:<hex>`` of the certificate's DER form (PEM text or DER bytes)."""
    if isinstance(cert_pem, str) or cert_pem.startswith(b"-----"):
        raw = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
        der = x509.load_pem_x509_certificate(raw).public_bytes(serialization.Encoding.DER)
    else:
        der = cert_pem
    return "sha256:" + hashlib.sha256(der).hexdigest()


def common_name(cert_pem: str | bytes) -> str:
    raw = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    cert = (x509.load_pem_x509_certificate(raw) if raw.startswith(b"-----")
            else x509.load_der_x509_certificate(raw))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def not_after(cert_pem: str) -> _dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc

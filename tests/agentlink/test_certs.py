"""agentlink/certs.py: what the installation's CA signs for an agent."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from opencbr.agentlink import certs

#: ``openssl ecparam -name secp112r1 -genkey | openssl req -new -key /dev/stdin -subj /CN=x``: a curve
#: OpenSSL parses but cryptography cannot use (``UnsupportedAlgorithm``, which was a 500 at enrolment).
SECP112R1_CSR = """-----BEGIN CERTIFICATE REQUEST-----
MHswRwIBADAMMQowCAYDVQQDDAF4MDIwEAYHKoZIzj0CAQYFK4EEAAYDHgAEnMrm
5CPpUsazCRCC3NEjPypAbXLq33CBizPDEKAAMAoGCCqGSM49BAMCAyQAMCECDmg/
8zLvuMCO91Y3wjS0Ag8Az2WEhYLgkch0h+OnnYs=
-----END CERTIFICATE REQUEST-----
"""


@pytest.fixture(scope="module")
def authority():
    return certs.new_authority()


def _csr(key) -> str:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asked-for")])).sign(key, algorithm))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
                                 rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate()],
                         ids=["p256", "p384", "rsa2048", "ed25519"])
def test_strong_keys_are_signed_under_the_name_the_ca_chooses(authority, key):
    ca_cert, ca_key = authority
    cert = certs.sign_csr(ca_cert, ca_key, _csr(key), common_name="agent-7", server=True, client=False)
    assert certs.common_name(cert) == "agent-7"


@pytest.mark.parametrize("csr", [
    pytest.param(lambda: _csr(rsa.generate_private_key(65537, 1024)), id="rsa1024"),
    pytest.param(lambda: _csr(dsa.generate_private_key(2048)), id="dsa"),
    pytest.param(lambda: _csr(ec.generate_private_key(ec.SECP256K1())), id="secp256k1"),
    pytest.param(lambda: SECP112R1_CSR, id="secp112r1-unsupported"),
])
def test_weak_or_unusable_keys_are_a_value_error(authority, csr):
    """The enrolment answers a ValueError with a 400; anything else was a 500."""
    ca_cert, ca_key = authority
    with pytest.raises(ValueError, match="we sign"):
        certs.sign_csr(ca_cert, ca_key, csr(), common_name="agent-7", server=True, client=False)

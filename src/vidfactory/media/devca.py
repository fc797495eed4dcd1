"""A local development CA and C2PA signing certificate, made once on first run when none is configured.

Production deployments configure their own certificate chain and key (a CA that verifiers trust);
this exists so that `make run` signs every clip from the first one. Plain files in, plain files out.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DevCredentials", "ensure_dev_credentials"]

ca_valid_days = 3650
signer_valid_days = 825
clock_skew_s = 300  # issued slightly in the past so that a verifier's clock a little behind accepts it
organization = "vidfactory development (not for production)"


@dataclass(frozen=True)
class DevCredentials:
    cert_chain_path: Path  # signer certificate then CA certificate, PEM
    key_path: Path  # signer private key, PKCS#8 PEM, in a directory only its owner can open (0700)
    anchor_path: Path  # CA certificate, PEM: the trust anchor verifiers are given


def ensure_dev_credentials(directory: Path) -> DevCredentials:
    """Return the credentials under `directory`, creating the CA and signer on first use.

    The CA's private key is never written: it signs the one leaf certificate and is discarded, so the
    development CA cannot issue anything else."""
    credentials = _paths(directory)
    if credentials.key_path.exists():
        return credentials
    # 1. Make everything in a private directory beside the target ...
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    staged = _paths(staging)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=clock_skew_s)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_certificate(ca_key, now)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = _signer_certificate(signer_key, ca, ca_key, now)
    staged.anchor_path.write_bytes(_pem(ca))
    staged.cert_chain_path.write_bytes(_pem(signer) + _pem(ca))
    staged.key_path.write_bytes(signer_key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    # 2. ... then rename it into place in one step: a second process starting at the same moment (API
    #    and worker) either wins the rename or uses the winner's set, never half of each.
    try:
        staging.rename(directory)
    except OSError:
        shutil.rmtree(staging)
    return credentials


def _paths(directory: Path) -> DevCredentials:
    return DevCredentials(directory / "signer-chain.pem", directory / "signer-key.pem", directory / "ca.pem")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, sign: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(_name("vidfactory dev CA")).issuer_name(_name("vidfactory dev CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=ca_valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(sign=False, cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _signer_certificate(key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                        ca_key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    # C2PA requires a non-CA leaf with digitalSignature and a signing EKU (emailProtection is accepted).
    return (x509.CertificateBuilder()
            .subject_name(_name("vidfactory dev C2PA signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=signer_valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True, cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)

"""Key generation, envelope encryption of private keys, and public-key export.

A private key is stored only as AES-256-GCM ciphertext of its PKCS#8 DER form, under a key
derived from the key-encryption key (KEK) with HKDF-SHA256, with the key id as associated data
(so a ciphertext cannot be moved to another key's row). Each row records the KEK's id (a short
fingerprint of the derived key), so a rewrap can run while the service keeps working.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ALGORITHMS = ("RS256", "ES256", "EdDSA")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class KeyDecryptionError(Exception):
    """A stored private key could not be opened: wrong or missing KEK, or tampered data."""


@dataclass(frozen=True)
class Kek:
    """One key-encryption key, ready to use."""

    id: str
    aead: AESGCM = field(repr=False)

    @classmethod
    def derive(cls, secret: str) -> Kek:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tessera-kek-v1").derive(
            secret.encode()
        )
        return cls(id=hashlib.sha256(b"kek-id" + key).hexdigest()[:16], aead=AESGCM(key))


class Keyring:
    """The current KEK (encrypts) and previous ones (still decrypt)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        keks = [Kek.derive(s) for s in secrets]
        self.current = keks[0]
        self._by_id = {k.id: k for k in keks}

    def encrypt(self, kid: str, private_der: bytes) -> tuple[bytes, str]:
        """Ciphertext (nonce ‖ AES-GCM output) and the id of the KEK used."""
        nonce = os.urandom(12)
        return nonce + self.current.aead.encrypt(nonce, private_der, kid.encode()), self.current.id

    def decrypt(self, kid: str, blob: bytes, kek_id: str) -> bytes:
        kek = self._by_id.get(kek_id)
        if kek is None:
            raise KeyDecryptionError(
                f"signing key {kid} is encrypted under KEK {kek_id}, which is not configured"
            )
        try:
            return kek.aead.decrypt(blob[:12], blob[12:], kid.encode())
        except InvalidTag:
            raise KeyDecryptionError(
                f"signing key {kid} cannot be opened with KEK {kek_id}: wrong key or tampered data"
            ) from None


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg}")


def private_to_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_from_der(der: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    )
    return key


def public_jwk(key: PrivateKey, kid: str, alg: str) -> dict[str, Any]:
    public = key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


def public_pem(key: PrivateKey) -> str:
    """RSA keys as PKCS#1 (what Tapis update_keys returns); others as SubjectPublicKeyInfo."""
    public = key.public_key()
    fmt = (
        serialization.PublicFormat.PKCS1
        if isinstance(public, rsa.RSAPublicKey)
        else serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.public_bytes(serialization.Encoding.PEM, fmt).decode()


def b64url(data: bytes) -> bytes:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class JwsSigner:
    """Compact JWS signing with one private key, directly with ``cryptography``.

    The header is encoded once per key, and each claim set arrives already serialised, so a
    signature costs one base64 pass and the private-key operation. This is measured faster than
    ``jwt.encode`` (bench/bench_keys.py prints both), most for ES256 where PyJWT's own work
    is a large share; the tokens are byte-for-byte what PyJWT would give with the same header.
    """

    def __init__(self, key: PrivateKey, alg: str, kid: str) -> None:
        # Sorted keys, as PyJWT writes its headers.
        header = {"alg": alg, "kid": kid, "typ": "JWT"}
        self._header = b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
        self._sign = _raw_signer(key, alg)

    def token(self, payload: bytes) -> str:
        """The compact JWS of ``payload`` (a serialised JSON object)."""
        signing_input = self._header + b"." + b64url(payload)
        return (signing_input + b"." + b64url(self._sign(signing_input))).decode()


def _raw_signer(key: PrivateKey, alg: str) -> Callable[[bytes], bytes]:
    if alg == "RS256" and isinstance(key, rsa.RSAPrivateKey):
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        return lambda data: key.sign(data, pkcs1, sha256)
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(hashes.SHA256())

        def es256(data: bytes) -> bytes:
            # JWS wants r ‖ s, 32 bytes each (RFC 7518 §3.4), not the DER that OpenSSL gives.
            r, s = decode_dss_signature(key.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return es256
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    raise ValueError(f"key does not match algorithm {alg}")

"""Opaque credential formats and their keyed hashes.

Tessera's own opaque tokens are ``tsr_`` + 43 base62 characters (256 random bits) + a 6-character
base62 CRC32 of everything before it, so a secret scanner (or a subscriber) can recognise one
offline and a typo is refused without a database query. Databricks tokens keep their upstream
form, ``dapi`` + 32 lowercase hex (128 random bits), which has no checksum.

Tokens are stored only as HMAC-SHA256 under a pepper that lives outside the database. Several
peppers may be configured: the first hashes new tokens, the others are retired ones still
accepted, so the pepper can rotate without invalidating tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass, field

OPAQUE_PREFIX = "tsr_"
DATABRICKS_PREFIX = "dapi"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SECRET_CHARS = 43  # 62**43 > 2**256
_CHECK_CHARS = 6  # 62**6 > 2**32
OPAQUE_PATTERN = re.compile(rf"^{OPAQUE_PREFIX}[0-9A-Za-z]{{{_SECRET_CHARS + _CHECK_CHARS}}}$")
DATABRICKS_PATTERN = re.compile(r"^dapi[0-9a-f]{32}$")
JWT_PATTERN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_BASE62[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_CHARS)


def new_opaque_token() -> str:
    """A new Tessera opaque token: prefix, 256-bit secret, CRC32 checksum."""
    body = OPAQUE_PREFIX + _base62(secrets.randbits(256), _SECRET_CHARS)
    return body + _checksum(body)


def new_databricks_token() -> str:
    """A new Databricks-style token: ``dapi`` and 128 random bits in lowercase hex."""
    return DATABRICKS_PREFIX + secrets.token_hex(16)


def is_well_formed_opaque(token: str) -> bool:
    """True for a Tessera opaque token whose checksum matches (no database needed)."""
    if not OPAQUE_PATTERN.match(token):
        return False
    body, check = token[:-_CHECK_CHARS], token[-_CHECK_CHARS:]
    return hmac.compare_digest(_checksum(body), check)


def is_databricks_token(token: str) -> bool:
    """Whether ``token`` has the Databricks form (there is no checksum to verify)."""
    return bool(DATABRICKS_PATTERN.match(token))


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has a compact JWS's three base64url parts; nothing is verified."""
    return bool(JWT_PATTERN.match(token))


def classify(token: str) -> str | None:
    """``"opaque"``, ``"databricks"``, ``"jwt"`` or None for anything Tessera never issues."""
    if is_well_formed_opaque(token):
        return "opaque"
    if is_databricks_token(token):
        return "databricks"
    if looks_like_jwt(token):
        return "jwt"
    return None


@dataclass(frozen=True)
class Pepper:
    """The token-hashing keys: ``current`` hashes new tokens; ``retired`` still verify old ones."""

    current: bytes = field(repr=False)
    retired: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def parse(cls, value: str) -> Pepper:
        """Parse ``TESSERA_TOKEN_PEPPER``: comma-separated, current first, each ≥ 32 characters."""
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or any(len(p) < 32 for p in parts):
            raise ValueError("each pepper must be at least 32 characters")
        return cls(parts[0].encode(), tuple(p.encode() for p in parts[1:]))

    def hash(self, token: str) -> bytes:
        """The token's HMAC-SHA256 under the current pepper: what is stored for a new token."""
        return hmac.new(self.current, token.encode(), hashlib.sha256).digest()

    def candidate_hashes(self, token: str) -> list[bytes]:
        """The hash under every pepper still accepted, current first."""
        return [
            hmac.new(key, token.encode(), hashlib.sha256).digest()
            for key in (self.current, *self.retired)
        ]

"""The revocation set a subscriber holds: every identifier of every unexpired revocation.

Memory-lean because a verifier may hold a million entries. Identifiers are kept as ints when
they have a canonical hex form (a lower-case UUID becomes a 128-bit int, a 64-hex Databricks
display id a tagged 256-bit int): about half the size of the string, and still exact, so no
token is ever refused by a hash collision. Expiry times are rounded up to the next minute and
shared between entries, and each entry sits in one per-minute bucket so dropping expired ones
never scans the whole set.
"""

from __future__ import annotations

import heapq
import math
import re

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_uuid_match = _UUID.fullmatch
_hex64_match = _HEX64.fullmatch
_HEX64_TAG = 1 << 256  # keeps a display id's int apart from every UUID's int
BUCKET_SECONDS = 60
NEVER = -1  # a revocation of a token that never expires

Key = int | str


def identifier_key(identifier: str) -> Key:
    """The compact, exact dictionary key of a token identifier."""
    if len(identifier) == 36 and _uuid_match(identifier):
        return int(identifier.replace("-", ""), 16)
    if len(identifier) == 64 and _hex64_match(identifier):
        return int(identifier, 16) | _HEX64_TAG
    return identifier


class RevocationSet:
    """Identifiers (token id, jti, display id) of revoked tokens, until they expire."""

    def __init__(self) -> None:
        self._expiry: dict[Key, int] = {}
        self._buckets: dict[int, list[Key]] = {}
        self._heap: list[int] = []
        self._canonical: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, identifier: object) -> bool:
        return isinstance(identifier, str) and identifier_key(identifier) in self._expiry

    def add(
        self,
        token_id: str,
        jti: str | None,
        display_id: str | None,
        expires_at: float | None,
        now: float,
    ) -> bool:
        """Hold a token's identifiers until ``expires_at`` (epoch seconds, None: never).

        Returns True when the token was not held yet. An already expired revocation is not
        held: its token is refused for being expired anyway.
        """
        if expires_at is not None and expires_at <= now:
            return False
        bucket = self._bucket(expires_at)
        new = self._hold(identifier_key(token_id), bucket)
        if jti and jti != token_id:
            new = self._hold(identifier_key(jti), bucket) or new
        if display_id:
            new = self._hold(identifier_key(display_id), bucket) or new
        return new

    def _hold(self, key: Key, bucket: int) -> bool:
        held = self._expiry.get(key)
        if held is not None and (held == NEVER or (bucket != NEVER and held >= bucket)):
            return False
        self._expiry[key] = bucket
        if bucket != NEVER:
            self._buckets[bucket].append(key)
        return held is None

    def _bucket(self, expires_at: float | None) -> int:
        if expires_at is None:
            return NEVER
        bucket = math.ceil(expires_at / BUCKET_SECONDS) * BUCKET_SECONDS
        # Hand out the one int object stored for this bucket, so a million entries share a
        # few hundred expiry values instead of holding one each.
        canonical = self._canonical.get(bucket)
        if canonical is not None:
            return canonical
        self._canonical[bucket] = bucket
        self._buckets[bucket] = []
        heapq.heappush(self._heap, bucket)
        return bucket

    def prune(self, now: float) -> int:
        """Drop every entry whose token expired before ``now``; returns how many."""
        dropped = 0
        while self._heap and self._heap[0] < now:
            bucket = heapq.heappop(self._heap)
            self._canonical.pop(bucket, None)
            for key in self._buckets.pop(bucket, ()):
                if self._expiry.get(key) == bucket:
                    del self._expiry[key]
                    dropped += 1
        return dropped

"""The subscriber's memory-lean revocation set."""

from __future__ import annotations

import uuid

from shared.subscriber.revset import RevocationSet, identifier_key

NOW = 1_800_000_000.0


def test_every_identifier_of_a_revoked_token_matches() -> None:
    revoked = RevocationSet()
    token_id, display_id = str(uuid.uuid4()), "0f" * 32
    assert revoked.add(token_id, None, display_id, NOW + 60, NOW)
    assert token_id in revoked and display_id in revoked
    assert str(uuid.uuid4()) not in revoked and "1f" * 32 not in revoked


def test_keys_are_exact_never_a_lossy_hash() -> None:
    value = str(uuid.uuid4())
    assert identifier_key(value) == int(value.replace("-", ""), 16)
    # A display id and a UUID with the same low bits stay apart.
    assert identifier_key("0" * 32 + value.replace("-", "")) != identifier_key(value)
    # Anything not canonical stays a string: underscores, upper case, spaces.
    for odd in (value.upper(), value.replace("-", "_"), f" {value[1:]}", "jti-7"):
        assert identifier_key(odd) == odd


def test_adding_twice_is_new_only_once() -> None:
    revoked = RevocationSet()
    jti = str(uuid.uuid4())
    assert revoked.add(jti, jti, None, NOW + 60, NOW)
    assert not revoked.add(jti, jti, None, NOW + 60, NOW)
    assert len(revoked) == 1


def test_expired_entries_are_dropped_and_never_held() -> None:
    revoked = RevocationSet()
    soon, later, forever = (str(uuid.uuid4()) for _ in range(3))
    assert not revoked.add(str(uuid.uuid4()), None, None, NOW - 1, NOW)
    revoked.add(soon, None, None, NOW + 30, NOW)
    revoked.add(later, None, None, NOW + 3600, NOW)
    revoked.add(forever, None, None, None, NOW)
    assert revoked.prune(NOW + 600) == 1
    assert soon not in revoked and later in revoked and forever in revoked
    assert revoked.prune(NOW + 10**9) == 1
    assert forever in revoked and len(revoked) == 1


def test_a_later_expiry_extends_an_entry() -> None:
    revoked = RevocationSet()
    token_id = str(uuid.uuid4())
    revoked.add(token_id, None, None, NOW + 30, NOW)
    revoked.add(token_id, None, None, NOW + 3600, NOW)
    revoked.prune(NOW + 600)
    assert token_id in revoked


def test_non_strings_are_never_revoked() -> None:
    revoked = RevocationSet()
    revoked.add("7", None, None, None, NOW)
    assert 7 not in revoked and None not in revoked

"""The revocation service's pure domain: request parsing, records, the event contract."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from services.revocation.domain import (
    new_revocation,
    parse_revoke,
    target_from_record,
    token_revoked,
)
from services.revocation.errors import UnknownToken
from shared.errors import BadRequest
from shared.tokens import new_databricks_token, new_opaque_token

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _last_character_changed(token: str) -> str:
    """The token with a broken checksum (a fixed "x" left 1 token in 62 intact)."""
    return token[:-1] + ("x" if token[-1] != "x" else "y")


def _record(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "display_id": None,
        "tenant": "acme",
        "subject": "alice",
        "kind": "jwt_access",
        "family_id": str(uuid.uuid4()),
        "kid": "k1",
        "expires_at": (NOW + timedelta(minutes=5)).isoformat(),
    }
    record.update(overrides)
    return record


def test_jwt_selector_needs_no_issuer_and_keeps_every_identifier() -> None:
    command = parse_revoke(
        {
            "tenant": "acme",
            "jwt": {"jti": "j-1", "subject": "alice", "expires_at": "2026-01-01T00:00:00Z"},
            "reason": "logout",
        }
    )
    assert command.selector == "jwt" and command.jwt is not None
    assert command.jwt.token_id == command.jwt.jti == "j-1"
    assert command.jwt.expires_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert command.reason == "logout"


@pytest.mark.parametrize(
    "value",
    [new_opaque_token(), new_databricks_token()],
)
def test_opaque_and_databricks_values_are_accepted_by_shape(value: str) -> None:
    assert parse_revoke({"tenant": "acme", "token": value}).value == value


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": "acme"},
        {"tenant": "acme", "subject": "a", "kid": "k"},
        {"tenant": "", "subject": "a"},
        {"tenant": "UPPER", "subject": "a"},
        {"tenant": "acme", "token": _last_character_changed(new_opaque_token())},
        {"tenant": "acme", "display_id": "ABC"},
        {"tenant": "acme", "subject": ""},
        {"tenant": "acme", "subject": "x" * 300},
        {"tenant": "acme", "jwt": {"subject": "a"}},
        {"tenant": "acme", "jwt": {"jti": "j", "kind": "opaque"}},
        {"tenant": "acme", "jwt": {"jti": "j", "expires_at": "2026-01-01T00:00:00"}},
        {"tenant": "acme", "jwt": {"jti": "j", "expires_at": True}},
        {"tenant": "acme", "subject": "a", "reason": 5},
        # A caller's copy of an issuer record is not a selector: the issuer is asked.
        {"tenant": "acme", "record": _record()},
    ],
)
def test_malformed_requests_are_bad_requests(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        parse_revoke(body)


def test_owner_other_than_the_jwt_subject_is_unknown_token() -> None:
    with pytest.raises(UnknownToken):
        parse_revoke({"tenant": "acme", "jwt": {"jti": "j", "subject": "bob"}, "owner": "alice"})


def test_record_of_a_jwt_carries_its_jti_and_an_opaque_one_none() -> None:
    jwt_target = target_from_record(_record(), "acme")
    assert jwt_target.jti == jwt_target.token_id
    opaque = target_from_record(_record(kind="databricks", display_id="a" * 64), "acme")
    assert opaque.jti is None and opaque.display_id == "a" * 64


def test_record_of_another_tenant_is_never_revoked() -> None:
    with pytest.raises(UnknownToken):
        target_from_record(_record(tenant="other"), "acme")


def test_event_matches_the_published_schemas_and_carries_no_value() -> None:
    target = target_from_record(_record(kind="databricks", display_id="b" * 64), "acme")
    envelope = token_revoked(new_revocation(7, "acme", target, "compromised", NOW))
    body = envelope.to_dict()
    jsonschema.validate(body, json.loads((SCHEMAS / "event-envelope.json").read_text()))
    jsonschema.validate(body["data"], json.loads((SCHEMAS / "token-revoked.v1.json").read_text()))
    assert body["seq"] == 7 and body["tenant"] == "acme"
    assert envelope.routing_key == "token.revoked.v1"
    assert envelope.occurred_at == NOW
    assert set(body["data"]) == {
        "token_id",
        "jti",
        "display_id",
        "subject",
        "kind",
        "family_id",
        "expires_at",
        "revoked_at",
        "reason",
    }

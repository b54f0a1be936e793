import pytest

from services.revocation.domain import parse_revoke
from services.revocation.errors import UnknownToken
from shared.errors import BadRequest

RECORD = {
    "id": "0b6f8f0e-7d53-4b0e-9c63-1d2f3a4b5c6d",
    "tenant": "acme",
    "subject": "ann",
    "kind": "databricks",
    "display_id": "a" * 64,
    "expires_at": None,
}


def test_record_selector_needs_no_lookup_and_keeps_every_identifier() -> None:
    command = parse_revoke({"tenant": "acme", "record": RECORD, "reason": "deleted"})
    assert command.selector == "record"
    assert command.jwt is not None
    assert (command.jwt.token_id, command.jwt.display_id) == (RECORD["id"], "a" * 64)


def test_record_of_another_tenant_or_owner_is_unknown() -> None:
    with pytest.raises(UnknownToken):
        parse_revoke({"tenant": "other", "record": RECORD})
    with pytest.raises(UnknownToken):
        parse_revoke({"tenant": "acme", "record": RECORD, "owner": "bob"})


def test_malformed_record_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_revoke({"tenant": "acme", "record": {"tenant": "acme"}})

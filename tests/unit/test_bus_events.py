"""The typed events and their published JSON Schemas say the same, and every event has both."""

from __future__ import annotations

import ast
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.issuer import events as issuer_events
from services.issuer.domain import record_json
from services.issuer.events import HANDLERS as ISSUER_HANDLERS
from services.keys import events as keys_events
from services.revocation.events import consumers as revocation_consumers
from shared.bus.envelope import Envelope
from shared.bus.events import EVENTS, Event, EventError, parse_event, specs
from shared.subscriber.follower import ROUTING_KEYS as SUBSCRIBER_KEYS

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "shared" / "schemas"
ROUTING_KEY = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)+\.v[0-9]+")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", re.IGNORECASE)
FORMATS = jsonschema.FormatChecker()
# jsonschema checks date-time only with an optional package; this is RFC 3339's grammar.
FORMATS.checks("date-time")(lambda value: not isinstance(value, str) or RFC3339.fullmatch(value))
UUID = "0b9f6d2c-8a1e-4a47-9d55-1f1c2b3a4d5e"
RECORD = {
    "id": UUID,
    "display_id": None,
    "tenant": "acme",
    "subject": "alice",
    "kind": "jwt_refresh",
    "name": None,
    "permissions": ["admin"],
    "created_at": "2026-11-24T15:16:30.123456+00:00",
    "expires_at": "2026-11-24T15:26:30+00:00",
    "last_used_at": None,
    "revoked_at": "2026-11-24T15:20:00+00:00",
    "created_by": None,
    "family_id": "8c1d2e3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f",
    "kid": "acme-1",
}


def _documented_token_revoked() -> dict[str, Any]:
    """The envelope docs/subscriber.md shows to subscribers in other languages."""
    text = (ROOT / "docs" / "subscriber.md").read_text()
    body: dict[str, Any] = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    return body


# One payload of each event as it travels (members in the publisher's order).
EXAMPLES: dict[str, dict[str, Any]] = {
    "token.revoked.v1": _documented_token_revoked()["data"],
    "token.issued.v1": {
        "token_id": UUID,
        "display_id": "a" * 64,
        "subject": "alice",
        "kind": "databricks",
        "expires_at": "2026-11-24T17:21:30+02:00",
        "family_id": None,
    },
    "token.refresh_reused.v1": {
        "family_id": RECORD["family_id"],
        "token_id": UUID,
        "subject": "alice",
        "tokens": [RECORD, {**RECORD, "kind": "jwt_access", "id": str(UUID[::-1])}],
    },
    "tenant.created.v1": {"id": "acme", "alg": "EdDSA"},
    "key.rotated.v1": {
        "kid": "acme-2",
        "alg": "RS256",
        "previous_kid": "acme-1",
        "activates_at": "2026-11-24T15:16:30.123456+00:00",
    },
    "key.revoked.v1": {"kid": "acme-1"},
}


def _schema(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return body


def _schema_valid(cls: type[Event], payload: Any) -> bool:
    schema = _schema(cls.SCHEMA)
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS).is_valid(payload)


def _parses(cls: type[Event], payload: Any) -> bool:
    try:
        cls.from_payload(payload)
    except EventError:
        return False
    return True


def test_every_event_has_an_example() -> None:
    assert set(EXAMPLES) == set(EVENTS)


@pytest.mark.parametrize("key", sorted(EVENTS))
def test_the_dataclass_declares_what_its_schema_does(key: str) -> None:
    cls = EVENTS[key]
    schema = _schema(cls.SCHEMA)
    assert schema["$id"] == f"https://tessera.dev/schemas/{cls.SCHEMA}"
    assert schema["title"] == f"{cls.TYPE} v{cls.VERSION} data"
    assert key in schema["description"] and schema["type"] == "object"
    # Every field is required, in payload order; extra members are tolerated on both sides.
    assert schema["required"] == [spec.name for spec in specs(cls)]
    assert list(schema["properties"]) == schema["required"]
    assert schema["additionalProperties"] is True
    for spec in specs(cls):
        prop = schema["properties"][spec.name]
        kind = "array" if spec.kind == "records" else "string"
        assert prop["type"] == ([kind, "null"] if spec.nullable else kind), spec.name
        assert prop.get("format") == ("date-time" if spec.kind == "date-time" else None)
        assert prop.get("minLength", 0) == spec.min_length, spec.name
        pattern = spec.pattern.pattern if spec.pattern else None
        assert prop.get("pattern") == (f"^{pattern}$" if pattern else None), spec.name
        enum = list(spec.enum) + [None] * spec.nullable if spec.enum else None
        assert prop.get("enum") == enum, spec.name


@pytest.mark.parametrize("key", sorted(EVENTS))
def test_an_example_round_trips_through_the_dataclass_byte_for_byte(key: str) -> None:
    cls, payload = EVENTS[key], EXAMPLES[key]
    assert _schema_valid(cls, payload)
    event = cls.from_payload(payload)
    assert json.dumps(event.to_payload()) == json.dumps(payload)
    envelope = event.to_envelope("acme", seq=7 if cls.SOURCE == "revocation" else None)
    wire = envelope.to_dict()
    jsonschema.validate(wire, _schema("event-envelope.json"), format_checker=FORMATS)
    assert wire["type"] == cls.TYPE and envelope.routing_key == key
    parsed = Envelope.from_json(envelope.to_json())
    assert cls.from_envelope(parsed) == event == parse_event(parsed)


def test_the_documented_envelope_is_what_the_revocation_service_publishes() -> None:
    documented = _documented_token_revoked()
    jsonschema.validate(documented, _schema("event-envelope.json"), format_checker=FORMATS)
    envelope = Envelope.from_dict(documented)
    event = parse_event(envelope)
    rebuilt = event.to_envelope(envelope.tenant, seq=envelope.seq, occurred_at=envelope.occurred_at)
    assert {**rebuilt.to_dict(), "id": documented["id"]} == documented


def _mutations(cls: type[Event]) -> list[tuple[str, Any]]:
    """(field, bad value or None for "left out") for each field: all that the schema decides."""
    cases: list[tuple[str, Any]] = []
    for spec in specs(cls):
        cases += [(spec.name, None), (spec.name, 7), (spec.name, {"x": 1}), (spec.name, True)]
        if spec.kind == "date-time":
            cases += [(spec.name, "yesterday"), (spec.name, "2026-11-24T15:16:30")]
        if spec.kind == "string":
            cases += [(spec.name, ""), (spec.name, "Bad\n"), (spec.name, "x" * 65)]
        if spec.kind == "records":
            cases += [(spec.name, [1]), (spec.name, "[]")]
    return cases


@pytest.mark.parametrize("key", sorted(EVENTS))
def test_from_payload_refuses_exactly_what_the_schema_refuses(key: str) -> None:
    cls = EVENTS[key]
    refused = 0
    for name, value in _mutations(cls):
        payload = dict(EXAMPLES[key])
        if value is None:
            del payload[name]
        else:
            payload[name] = value
        assert _parses(cls, payload) == _schema_valid(cls, payload), (name, value)
        if not _schema_valid(cls, payload):
            refused += 1
            with pytest.raises(EventError, match=f"^{re.escape(key)}: {name} "):
                cls.from_payload(payload)
        payload[name] = None
        assert _parses(cls, payload) == _schema_valid(cls, payload), (name, "null")
    assert refused >= 4 * len(specs(cls))
    assert _parses(cls, {**EXAMPLES[key], "added_later": 1})
    with pytest.raises(EventError, match="JSON object"):
        cls.from_payload([EXAMPLES[key]])


def test_an_envelope_of_another_type_is_not_parsed_as_this_one() -> None:
    token_revoked, key_revoked = EVENTS["token.revoked.v1"], EVENTS["key.revoked.v1"]
    envelope = key_revoked.from_payload(EXAMPLES["key.revoked.v1"]).to_envelope("acme")
    with pytest.raises(EventError, match=r"expected token\.revoked\.v1, got key\.revoked\.v1"):
        token_revoked.from_envelope(envelope)
    unknown = Envelope(type="token.misplaced", source="issuer", tenant="acme", data={})
    with pytest.raises(EventError, match=r"unknown event token\.misplaced\.v1"):
        parse_event(unknown)


def test_every_schema_is_an_event_and_every_event_has_its_schema() -> None:
    published = {path.name for path in SCHEMAS.glob("*.json")} - {"event-envelope.json"}
    assert published == {cls.SCHEMA for cls in EVENTS.values()}


def _python_files() -> list[Path]:
    return sorted([*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")])


def test_every_event_published_or_consumed_anywhere_is_a_typed_event() -> None:
    builders: list[str] = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and ROUTING_KEY.fullmatch(str(node.value)):
                assert node.value in EVENTS, f"{path}:{node.lineno} {node.value}"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Envelope"
            ):
                builders.append(str(path.relative_to(ROOT)))
    # Publishers build an event and let it make its envelope: no hand-made envelope anywhere.
    assert builders == ["shared/bus/events.py"]
    handled = {key for table in ISSUER_HANDLERS.values() for key in table}
    handled |= {key for table in revocation_consumers(lambda: None).values() for key in table}
    assert handled | set(SUBSCRIBER_KEYS) <= set(EVENTS)


def test_publishers_write_the_payloads_they_wrote_as_dicts() -> None:
    """The members, their order and their formatting, as before the payloads were typed (an
    offset other than UTC is kept as the publisher gave it)."""
    at = datetime(2026, 11, 24, 15, 16, 30, 123456, tzinfo=UTC)
    later = datetime(2026, 11, 24, 17, 21, 30, tzinfo=timezone(timedelta(hours=2)))
    family, token = uuid.UUID(int=7), uuid.UUID(int=9)
    row = {
        **{name: None for name in RECORD},
        **{"id": token, "tenant": "acme", "subject": "alice", "kind": "jwt_refresh"},
        **{"permissions": [], "created_at": at, "expires_at": later, "family_id": family},
    }
    wire = [
        (
            issuer_events.token_issued(row),
            '{"token_id": "00000000-0000-0000-0000-000000000009", '
            '"display_id": null, "subject": "alice", "kind": "jwt_refresh", '
            '"expires_at": "2026-11-24T17:21:30+02:00", '
            '"family_id": "00000000-0000-0000-0000-000000000007"}',
        ),
        (
            issuer_events.refresh_reused(row, [row]),
            '{"family_id": '
            '"00000000-0000-0000-0000-000000000007", "token_id": '
            '"00000000-0000-0000-0000-000000000009", "subject": "alice", "tokens": ['
            + json.dumps(record_json(row))
            + "]}",
        ),
        (keys_events.tenant_created("acme", "RS256"), '{"id": "acme", "alg": "RS256"}'),
        (
            keys_events.key_rotated("acme", "k2", "ES256", None, later),
            '{"kid": "k2", '
            '"alg": "ES256", "previous_kid": null, "activates_at": "2026-11-24T17:21:30+02:00"}',
        ),
        (keys_events.key_revoked("acme", "k1"), '{"kid": "k1"}'),
    ]
    for envelope, data in wire:
        assert json.dumps(envelope.to_dict()["data"]) == data, envelope.routing_key
        assert envelope.tenant == "acme" and envelope.seq is None

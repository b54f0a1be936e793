"""Every event Tessera publishes: one frozen dataclass per type and version.

Each class is the ``data`` of one routing key (``token.revoked.v1`` is :class:`TokenRevoked`),
described for other languages by the JSON Schema in ``shared/schemas/`` its ``SCHEMA`` names
(``tests/unit/test_bus_events.py`` holds the two to each other). Publishers build the
dataclass and wrap it with :meth:`Event.to_envelope`; consumers parse ``envelope.data`` with
:meth:`Event.from_envelope` (or :meth:`Event.from_payload`), which checks every field and
raises :class:`EventError` naming the event and the field, never its value.

Every field is required on the wire (``null`` where the type allows it); members a payload
carries beyond them are ignored, so a version can gain members without breaking consumers. A
change that would break one is a new class with ``VERSION = 2``, published beside the old.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Annotated, Any, ClassVar, Self

from shared.bus.envelope import Envelope
from shared.ids import TENANT_ID

TOKEN_KINDS = ("opaque", "databricks", "jobmanager", "jwt_access", "jwt_refresh")
SIGNING_ALGORITHMS = ("RS256", "ES256", "EdDSA")
DISPLAY_ID = "[0-9a-f]{64}"
TokenRecords = tuple[dict[str, Any], ...]


class EventError(ValueError):
    """A payload that is not a valid event of its type."""


@dataclass(frozen=True)
class Text:
    """A string field's constraints, as its JSON Schema states them (``pattern`` unanchored:
    the whole value must match). Used as ``Annotated[str, Text(...)]``."""

    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    min_length: int = 0


NonEmpty = Annotated[str, Text(min_length=1)]
DisplayId = Annotated[str, Text(pattern=DISPLAY_ID)]
TokenKind = Annotated[str, Text(enum=TOKEN_KINDS)]
SigningAlgorithm = Annotated[str, Text(enum=SIGNING_ALGORITHMS)]
TenantId = Annotated[str, Text(pattern=TENANT_ID.pattern)]


@dataclass(frozen=True)
class _Spec:
    """How one field travels: its JSON kind, whether it may be null, its constraints."""

    name: str
    kind: str  # "string", "date-time" or "records" (an array of objects)
    nullable: bool
    pattern: re.Pattern[str] | None
    enum: tuple[str, ...] | None
    min_length: int

    def load(self, value: Any, event: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise EventError(f"{event}: {self.name} must not be null")
        if self.kind == "records":
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise EventError(f"{event}: {self.name} must be an array of objects")
            return tuple(value)
        if not isinstance(value, str):
            raise EventError(f"{event}: {self.name} must be a string")
        if self.kind == "date-time":
            return _datetime(value, f"{event}: {self.name}")
        if len(value) < self.min_length:
            raise EventError(f"{event}: {self.name} must not be empty")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise EventError(f"{event}: {self.name} must match ^{self.pattern.pattern}$")
        if self.enum is not None and value not in self.enum:
            raise EventError(f"{event}: {self.name} must be one of {', '.join(self.enum)}")
        return value


def _datetime(value: str, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise EventError(f"{what} must be an RFC 3339 date-time with an offset")
    return parsed


def _spec(name: str, hint: Any) -> _Spec:
    nullable = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        nullable, hint = len(args) < len(typing.get_args(hint)), args[0]
    text = Text()
    if typing.get_origin(hint) is Annotated:
        hint, text = typing.get_args(hint)[:2]
    if hint is str:
        kind = "string"
    elif hint is datetime:
        kind = "date-time"
    elif typing.get_origin(hint) is tuple:
        kind = "records"
    else:
        raise TypeError(f"{name}: no wire form for {hint!r}")
    pattern = re.compile(text.pattern) if text.pattern else None
    return _Spec(name, kind, nullable, pattern, text.enum, text.min_length)


_specs: dict[type[Event], tuple[_Spec, ...]] = {}
# Per class, the fields that are not strings on the wire (dates, records): all to_payload
# converts, so a feed page of a thousand revocations costs little more than the dicts did.
_converted: dict[type[Event], tuple[tuple[str, bool], ...]] = {}


def specs(cls: type[Event]) -> tuple[_Spec, ...]:
    """The wire form of each field of an event class, in payload order."""
    found = _specs.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        found = _specs[cls] = tuple(_spec(f.name, hints[f.name]) for f in fields(cls))
        _converted[cls] = tuple(
            (spec.name, spec.kind == "date-time") for spec in found if spec.kind != "string"
        )
    return found


@dataclass(frozen=True)
class Event:
    """Base of every event payload: its type, version and publishing service, and the
    conversion to and from the wire."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    SOURCE: ClassVar[str]
    ROUTING_KEY: ClassVar[str]
    # The file of its JSON Schema in shared/schemas/, e.g. token-refresh-reused.v1.json.
    SCHEMA: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ROUTING_KEY = f"{cls.TYPE}.v{cls.VERSION}"
        cls.SCHEMA = f"{re.sub('[._]', '-', cls.TYPE)}.v{cls.VERSION}.json"

    def to_payload(self) -> dict[str, Any]:
        """The envelope's ``data``: a JSON object, members in field order."""
        cls = type(self)
        if cls not in _converted:
            specs(cls)
        payload = dict(self.__dict__)  # the fields, in order: the dataclass __init__ set them
        for name, is_date in _converted[cls]:
            value = payload[name]
            if value is not None:
                payload[name] = value.isoformat() if is_date else list(value)
        return payload

    @classmethod
    def from_payload(cls, data: Any) -> Self:
        """The event of an envelope's ``data``, or :class:`EventError` saying what is wrong."""
        if not isinstance(data, Mapping):
            raise EventError(f"{cls.ROUTING_KEY}: the payload must be a JSON object")
        values: dict[str, Any] = {}
        for spec in specs(cls):
            if spec.name not in data:
                raise EventError(f"{cls.ROUTING_KEY}: {spec.name} is required")
            values[spec.name] = spec.load(data[spec.name], cls.ROUTING_KEY)
        return cls(**values)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Self:
        """:meth:`from_payload` of an envelope that must carry this event type and version."""
        if envelope.routing_key != cls.ROUTING_KEY:
            raise EventError(f"expected {cls.ROUTING_KEY}, got {envelope.routing_key}")
        return cls.from_payload(envelope.data)

    def to_envelope(
        self, tenant: str, *, seq: int | None = None, occurred_at: datetime | None = None
    ) -> Envelope:
        """This event in its envelope, ready for the outbox."""
        envelope = Envelope(
            type=self.TYPE,
            version=self.VERSION,
            source=self.SOURCE,
            tenant=tenant,
            seq=seq,
            data=self.to_payload(),
        )
        return envelope if occurred_at is None else replace(envelope, occurred_at=occurred_at)


@dataclass(frozen=True)
class TokenIssued(Event):
    """``token.issued.v1``: who got what kind of token until when; never its value."""

    TYPE = "token.issued"
    SOURCE = "issuer"

    token_id: NonEmpty
    display_id: DisplayId | None
    subject: str
    kind: TokenKind
    expires_at: datetime | None
    family_id: str | None


@dataclass(frozen=True)
class TokenRefreshReused(Event):
    """``token.refresh_reused.v1``: a used refresh token came back, so the issuer revoked its
    whole family; ``tokens`` are the family's TokenRecords, for the revocation service."""

    TYPE = "token.refresh_reused"
    SOURCE = "issuer"

    family_id: NonEmpty
    token_id: NonEmpty
    subject: str
    tokens: TokenRecords


@dataclass(frozen=True)
class TokenRevoked(Event):
    """``token.revoked.v1``: one revocation, by every identifier a client may know the token
    by (the envelope carries its ``seq`` and tenant); never the token's value."""

    TYPE = "token.revoked"
    SOURCE = "revocation"

    token_id: NonEmpty
    jti: str | None
    display_id: DisplayId | None
    subject: str | None
    kind: TokenKind | None
    family_id: str | None
    expires_at: datetime | None
    revoked_at: datetime
    reason: str | None


@dataclass(frozen=True)
class TenantCreated(Event):
    """``tenant.created.v1``: a tenant and the algorithm of its signing keys."""

    TYPE = "tenant.created"
    SOURCE = "keys"

    id: TenantId
    alg: SigningAlgorithm


@dataclass(frozen=True)
class KeyRotated(Event):
    """``key.rotated.v1``: a new signing key, active from ``activates_at``."""

    TYPE = "key.rotated"
    SOURCE = "keys"

    kid: NonEmpty
    alg: SigningAlgorithm
    previous_kid: str | None
    activates_at: datetime


@dataclass(frozen=True)
class KeyRevoked(Event):
    """``key.revoked.v1``: a signing key is compromised; nothing it signed is valid."""

    TYPE = "key.revoked"
    SOURCE = "keys"

    kid: NonEmpty


EVENTS: Mapping[str, type[Event]] = {
    cls.ROUTING_KEY: cls
    for cls in (
        TokenIssued,
        TokenRefreshReused,
        TokenRevoked,
        TenantCreated,
        KeyRotated,
        KeyRevoked,
    )
}


def parse_event(envelope: Envelope) -> Event:
    """The typed event of any envelope Tessera publishes; :class:`EventError` otherwise."""
    cls = EVENTS.get(envelope.routing_key)
    if cls is None:
        raise EventError(f"unknown event {envelope.routing_key}")
    return cls.from_payload(envelope.data)

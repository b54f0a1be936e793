"""The event envelope every Tessera event travels in (schema: shared/schemas/event-envelope.json).

The routing key is ``<type>.v<version>``, e.g. ``token.revoked.v1``. A breaking change to a
payload means a new version, published beside the old one.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")


class EnvelopeError(ValueError):
    """A message body that is not a valid Tessera event envelope."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Envelope:
    """One event as published: ``data`` is the payload of ``type`` at ``version``; ``seq`` numbers
    revocations (a gap means a missed event, to be filled from the replay feed)."""

    type: str
    source: str
    tenant: str
    data: dict[str, Any]
    version: int = 1
    seq: int | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: datetime = field(default_factory=_now)

    @property
    def routing_key(self) -> str:
        """``<type>.v<version>``: what the event is published and bound under."""
        return f"{self.type}.v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """The envelope's JSON object (``seq`` only when set)."""
        body: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "source": self.source,
            "occurred_at": self.occurred_at.isoformat(),
            "tenant": self.tenant,
            "data": self.data,
        }
        if self.seq is not None:
            body["seq"] = self.seq
        return body

    def to_json(self) -> bytes:
        """The compact UTF-8 JSON published as the message body."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, body: Any) -> Envelope:
        """A decoded envelope, checked field by field; :class:`EnvelopeError` naming the first
        missing or malformed one."""
        if not isinstance(body, dict):
            raise EnvelopeError("envelope must be a JSON object")
        try:
            event_type = body["type"]
            version = body["version"]
            seq = body.get("seq")
            if not isinstance(event_type, str) or not _TYPE.match(event_type):
                raise EnvelopeError("type must be a dotted lower-case name")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise EnvelopeError("version must be a positive integer")
            if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
                raise EnvelopeError("seq must be an integer")
            if not isinstance(body["data"], dict):
                raise EnvelopeError("data must be an object")
            for name in ("source", "tenant"):
                if not isinstance(body[name], str) or not body[name]:
                    raise EnvelopeError(f"{name} must be a non-empty string")
            occurred_at = datetime.fromisoformat(body["occurred_at"])
            if occurred_at.tzinfo is None:
                raise EnvelopeError("occurred_at must carry a UTC offset")
            return cls(
                type=event_type,
                version=version,
                source=body["source"],
                tenant=body["tenant"],
                data=body["data"],
                seq=seq,
                id=uuid.UUID(body["id"]),
                occurred_at=occurred_at,
            )
        except KeyError as exc:
            raise EnvelopeError(f"missing field {exc.args[0]}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, EnvelopeError):
                raise
            raise EnvelopeError(f"malformed envelope: {exc}") from None

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        """A message body parsed and checked; :class:`EnvelopeError` for anything else."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise EnvelopeError("body is not JSON") from None
        return cls.from_dict(body)

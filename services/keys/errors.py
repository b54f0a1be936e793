"""Errors of the keys service."""

from shared.errors import BadRequest, Conflict, NotFound


class UnknownTenant(NotFound):
    code = "unknown_tenant"


class UnknownKid(NotFound):
    code = "unknown_kid"


class TenantExists(Conflict):
    code = "conflict"


class InvalidClaims(BadRequest):
    code = "invalid_claims"


class RotationPending(Conflict):
    code = "rotation_pending"

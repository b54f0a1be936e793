"""The grammar of every identifier that may become part of an internal URL, and the one way to
build such a URL.

A decoded path parameter such as ``..%2F..%2Finternal%2Ftenants%3F`` once went into
``f"{keys}/internal/tenants/{tenant}/jwks"`` and reached another internal endpoint (issue 14).
Identifiers are checked against their grammar where they come in and again here, and each
segment is percent-quoted, so no value can add a path segment, a query or a fragment.
"""

from __future__ import annotations

import re
from typing import TypeGuard
from urllib.parse import quote

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
TENANT_ID_TEXT = "^[a-z0-9][a-z0-9-]{0,62}$"
# Kids are uuid4 hex today; the grammar leaves room for imported keys' kids (RFC 7638
# thumbprints are base64url), never for a dot or a slash.
KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
TOKEN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DISPLAY_ID = re.compile(r"[0-9a-f]{64}")


class InvalidIdentifier(ValueError):
    """A value that does not match its identifier grammar."""


def is_tenant_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a well-formed tenant id (``$`` would let a trailing newline in)."""
    return isinstance(value, str) and TENANT_ID.fullmatch(value) is not None


def is_kid(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a well-formed key id (never a dot or a slash)."""
    return isinstance(value, str) and KID.fullmatch(value) is not None


def tenant_url(base: str, tenant: str, *rest: str) -> str:
    """``{base}/internal/tenants/{tenant}[/rest…]``; :class:`InvalidIdentifier` for a tenant
    outside the grammar. ``rest`` are fixed path words or already-checked ids (a kid)."""
    if not is_tenant_id(tenant):
        raise InvalidIdentifier("malformed tenant id")
    for segment in rest:
        if not is_kid(segment):
            raise InvalidIdentifier("malformed path segment")
    return "/".join([f"{base}/internal/tenants", *(quote(s, safe="") for s in (tenant, *rest))])

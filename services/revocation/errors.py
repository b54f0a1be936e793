"""The revocation service's expected failures."""

from __future__ import annotations

from shared.errors import BadRequest, NotFound


class UnknownToken(NotFound):
    """The selector names no token of this tenant (or not one of ``owner``)."""

    code = "unknown_token"


class InvalidSelector(BadRequest):
    """The request does not name exactly one well-formed selector."""

    code = "bad_request"

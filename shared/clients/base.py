"""What every typed client of a Tessera service shares: the mutual-TLS session, URLs built from
checked identifiers, and one mapping of failures to :mod:`shared.errors`.

- Unreachable, timed out, refused at the handshake, a 5xx, or an answer that is not the JSON
  the API promises: :class:`Unavailable` (503 with ``Retry-After``), never a 500 here.
- A 4xx: the :mod:`shared.errors` type of that status (``quota_exceeded`` is
  :class:`QuotaExceeded`), carrying the service's code and message. The message is cut short and
  anything credential-shaped in it is masked, so passing it on to a caller leaks no secret.

Path segments are percent-quoted, and the typed clients check each identifier against its
grammar (``shared.ids``) before it becomes one: no value can add a segment, a query or a
fragment (issue 14). A malformed tenant id is an unknown tenant, answered without a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from json import loads
from typing import Any, ClassVar
from urllib.parse import quote

import structlog
from aiohttp import ClientError, ClientSession

from shared.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    TesseraError,
    Unauthenticated,
    Unavailable,
)
from shared.http import JSON, internal_session
from shared.ids import is_tenant_id
from shared.logging import mask_secrets
from shared.tls import ReloadingTls

log = structlog.get_logger("tessera.clients")

# A 4xx answer becomes the error of its status here (its code, when it names one, first).
ERROR_TYPES: Mapping[int, type[TesseraError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}
ERROR_CODES: Mapping[str, type[TesseraError]] = {"quota_exceeded": QuotaExceeded}
MESSAGE_MAX = 300
# An error answer is read only up to this size; a success as the API returns it.
_ERROR_BODY_MAX = 8192
UNREACHABLE = (ClientError, TimeoutError, OSError)  # ssl.SSLError is an OSError


def client_session(tls: ReloadingTls, *, timeout: float = 10.0) -> ClientSession:
    """The one session every typed client is built on: keep-alive mutual TLS presenting the
    holder's newest certificate, the request id and actor passed on (``internal_session``)."""
    return internal_session(tls, timeout=timeout)


def unknown_tenant() -> NotFound:
    """What the services answer for a tenant they do not have (a malformed id included)."""
    return NotFound("unknown tenant", code="unknown_tenant")


def checked_tenant(tenant: str) -> str:
    """``tenant`` if it is a well-formed tenant id; else the unknown-tenant error, no call."""
    if not is_tenant_id(tenant):
        raise unknown_tenant()
    return tenant


def service_error(service: str, status: int, body: Any) -> TesseraError:
    """The error a ``status`` answer of ``service`` (with its JSON ``body``) is here."""
    if status >= 500 or status < 400:
        return Unavailable(f"the {service} service is unavailable")
    fields = body if isinstance(body, dict) else {}
    code = fields.get("error") if isinstance(fields.get("error"), str) else None
    message = fields.get("message") if isinstance(fields.get("message"), str) else None
    details = fields.get("details") if isinstance(fields.get("details"), dict) else None
    kind = ERROR_CODES.get(code or "") or ERROR_TYPES.get(status, TesseraError)
    return kind(
        mask_secrets((message or f"the {service} service refused the request")[:MESSAGE_MAX]),
        code=code or ("http_error" if kind is TesseraError else None),
        status=status,
        details=mask_secrets(details) if details else None,
    )


class ServiceClient:
    """One service's API over a shared session; subclasses add one typed method per call."""

    service: ClassVar[str]

    def __init__(self, session: ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")

    @property
    def base_url(self) -> str:
        """The service's base URL, without a trailing slash."""
        return self._base

    def url(self, *segments: str) -> str:
        """``{base}/internal/…``: each segment percent-quoted (fixed words, checked ids)."""
        return "/".join([self._base, "internal", *(quote(s, safe="") for s in segments)])

    def unexpected(self) -> Unavailable:
        """The error for an answer that is not what the API promises."""
        return Unavailable(f"the {self.service} service answered an unexpected body")

    async def call(
        self,
        method: str,
        *segments: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """The JSON body of a 2xx answer to ``method /internal/<segments>``; any other outcome
        raised as the module docstring says."""
        body, _ = await self.call_with_headers(method, *segments, json=json, params=params)
        return body

    async def call_with_headers(
        self,
        method: str,
        *segments: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """:meth:`call`, with the answer's headers."""
        url = self.url(*segments)
        try:
            async with self._session.request(method, url, json=json, params=params) as resp:
                if resp.status >= 500:
                    raise Unavailable(f"the {self.service} service is unavailable")
                if resp.status >= 300:
                    raw = await resp.content.read(_ERROR_BODY_MAX)
                    raise service_error(self.service, resp.status, _json_or_none(raw))
                if resp.content_type != JSON:
                    raise self.unexpected()
                return await resp.json(), resp.headers.copy()
        except UNREACHABLE as exc:
            log.warning("service unreachable", target=self.service, error=type(exc).__name__)
            raise Unavailable(f"the {self.service} service is unavailable") from None
        except ValueError:  # a body that is not JSON after all
            raise self.unexpected() from None


def _json_or_none(raw: bytes) -> Any:
    try:
        return loads(raw)
    except ValueError:
        return None

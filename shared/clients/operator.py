"""The operator CLI's calls: one client of one service, with the operator's certificate, and one
line on stderr (no traceback, no log line) when the call fails."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from shared.clients.base import UNREACHABLE, ServiceClient, client_session
from shared.devstack import operator_tls, service_endpoint
from shared.errors import TesseraError, Unavailable
from shared.service import fail
from shared.tls import ReloadingTls

C = TypeVar("C", bound=ServiceClient)
T = TypeVar("T")
# An operator command waits longer than a service would: it may be the first call of a stack.
OPERATOR_TIMEOUT = 30.0


def operator_call(client: type[C], call: Callable[[C], Awaitable[T]], *, failed: str) -> T:
    """Run ``call`` with a ``client`` of its service found as ``shared.devstack`` says;
    on failure print ``tessera: <failed> (<status>): <message>`` (or that the service cannot
    be reached, and where it was looked for) and exit 1."""
    # The clients log an unreachable service for a server's log; a command says it once.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    endpoint = service_endpoint(os.environ, client.service)
    tls = ReloadingTls(operator_tls(os.environ))

    async def run() -> T:
        async with client_session(tls, timeout=OPERATOR_TIMEOUT) as session:
            return await call(client(session, endpoint.url))

    try:
        return asyncio.run(run())
    except Unavailable as exc:
        reason = exc.__context__
        cause = type(reason).__name__ if isinstance(reason, UNREACHABLE) else exc.message
        where = f"{endpoint.url} ({endpoint.source})"
        fail(f"cannot reach the {client.service} service at {where}: {cause}")
    except TesseraError as exc:
        fail(f"{failed} ({exc.status}): {exc.message}")

"""Helpers for end-to-end tests against the session's ``tessera dev`` stack."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import Stack
from tests.factories import unique as unique  # the e2e tests import it from here
from tests.tls import https_context


def mint(
    stack: Stack,
    subject: str,
    *,
    tenant: str = "dev",
    dialect: str = "databricks",
    permissions: tuple[str, ...] = (),
    ttl: int | None = None,
) -> str:
    """A credential straight from the operator CLI (how a tenant's first admin gets one)."""
    args = ["token", "create", "--tenant", tenant, "--subject", subject, "--dialect", dialect]
    for permission in permissions:
        args += ["--permission", permission]
    if ttl is not None:
        args += ["--ttl", str(ttl)]
    out = stack.cli(*args).stdout.strip()
    assert "\n" not in out
    return out


def ensure_tenant(stack: Stack, tenant: str) -> None:
    result = stack.cli("tenant", "create", tenant, check=False)
    assert result.returncode == 0 or "exists" in result.stderr, result.stderr


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request: (status, headers, body bytes), errors included."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        context = https_context(method, url)
        with urllib.request.urlopen(request, timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def http_json(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    status, headers, body = http(method, url, **kwargs)
    if body:
        assert headers.get("Content-Type") == "application/json", headers
        return status, json.loads(body)
    return status, None

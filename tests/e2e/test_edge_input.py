"""Hostile input against the running stack (issue 14): bodies in pieces, bodies too large,
deep JSON in every service, and public paths that tried to reach an internal API."""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Stack
from tests.e2e.gateway_support import http, http_json, mint, unique
from tests.tls import https_context
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

DEEP = b"[" * 30_000
TRAVERSALS = [
    "..%2F..%2Finternal%2Ftenants%3F",
    "dev%2Fkeys%3F",
    "..%2F..%2Fmetrics%3F",
    "..",
    "dev%0A",
]


def raw_request(url: str, head: bytes, parts: list[bytes]) -> tuple[int, Any]:
    """One request over a socket, its body written in ``parts`` (separate TCP segments)."""
    parts_of_url = urlsplit(url)
    host, port = parts_of_url.hostname or "127.0.0.1", parts_of_url.port or 80
    context = https_context("POST", url + head.split(b" ")[1].decode())
    with socket.create_connection((host, port), timeout=30) as plain:
        sock = context.wrap_socket(plain) if context else plain
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head)
        for part in parts:
            time.sleep(0.02)  # pacing only: each part leaves as its own segment
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        header, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)
    return int(header.split()[1]), json.loads(body) if body else None


def split(body: bytes, how: str) -> list[bytes]:
    cuts = {
        "one": [],
        "first byte": [1],
        "middle": [len(body) // 2],
        "last byte": [len(body) - 1],
        "many": list(range(7, len(body), 7)),
    }[how]
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("how", ["one", "first byte", "middle", "last byte", "many"])
def test_a_databricks_create_body_in_segments_is_read_whole(stack: Stack, how: str) -> None:
    token = mint(stack, unique("seg"))
    comment = f"segments {how} {secrets.token_hex(4)}"
    body = json.dumps({"comment": comment, "lifetime_seconds": 600}).encode()
    head = (
        f"POST /api/2.0/token/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, answer = raw_request(stack.gateway, head, split(body, how))
    assert status == 200, answer
    assert answer["token_info"]["comment"] == comment


@pytest.mark.parametrize("how", ["first byte", "middle", "many"])
def test_an_issuer_body_in_segments_is_read_whole(stack: Stack, how: str) -> None:
    request = {
        "tenant": "dev",
        "subject": unique("seg"),
        "kind": "opaque",
        "minter": {"kind": "operator"},
    }
    body = json.dumps(request).encode()
    head = (
        "POST /internal/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    status, answer = raw_request(stack.urls["issuer"], head, split(body, how))
    assert status == 200, answer
    assert answer["token"]["tenant"] == "dev"


def dialect_requests(stack: Stack) -> list[tuple[str, str, str, dict[str, str]]]:
    """(name, method, url, headers) of a body-taking request in each dialect."""
    token = mint(stack, unique("deep"), dialect="opaque", permissions=("admin",))
    g = stack.gateway
    json_ct = {"Content-Type": "application/json"}
    return [
        (
            "databricks",
            "POST",
            f"{g}/api/2.0/token/create",
            {**json_ct, "Authorization": f"Bearer {token}"},
        ),
        ("lagrello", "POST", f"{g}/v1/tokens", {**json_ct, "Authorization": f"Bearer {token}"}),
        ("tapis", "POST", f"{g}/v3/tokens", json_ct),
        ("jobmanager", "POST", f"{g}/v1/api_access_token", json_ct),
    ]


def assert_dialect_error(name: str, status: int, body: Any, expected: int) -> None:
    if name == "tapis":
        assert (status, body["status"], body["result"]) == (400, "error", None), body
    elif name == "databricks":
        assert status == expected and body["error_code"] == "INVALID_PARAMETER_VALUE", body
    elif name == "lagrello":
        assert status == expected and set(body) == {"message", "errorType"}, body
    else:
        assert status == expected and set(body) == {"detail"}, body


def test_deep_json_gets_400_in_every_dialect(stack: Stack) -> None:
    for name, method, url, headers in dialect_requests(stack):
        status, body = http_json(method, url, raw=DEEP, headers=headers)
        assert_dialect_error(name, status, body, 400)


def test_deep_claims_in_a_tapis_create_get_400(stack: Stack) -> None:
    claims = b'{"a":' * 900 + b"1" + b"}" * 900
    raw = (
        b'{"account_type":"user","token_tenant_id":"dev","token_username":"u","claims":'
        + claims
        + b"}"
    )
    status, body = http_json(
        "POST", f"{stack.gateway}/v3/tokens", raw=raw, headers={"Content-Type": "application/json"}
    )
    assert (status, body["status"]) == (400, "error")
    assert "nested deeper" in body["message"]


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("issuer", "/internal/tokens"),
        ("issuer", "/internal/authenticate"),
        ("keys", "/internal/tenants"),
        ("keys", "/internal/tenants/dev/sign"),
        ("revocation", "/internal/revocations"),
    ],
)
def test_deep_json_gets_400_in_the_internal_services(stack: Stack, service: str, path: str) -> None:
    status, body = http_json("POST", stack.urls[service] + path, raw=DEEP)
    assert status == 400 and body["error"] == "bad_request", body


def test_a_body_over_the_limit_gets_413_in_the_dialects_shape(stack: Stack) -> None:
    big = json.dumps({"comment": "x" * (1024 * 1024 + 10)}).encode()
    for name, method, url, headers in dialect_requests(stack):
        status, body = http_json(method, url, raw=big, headers=headers)
        assert_dialect_error(name, status, body, 413)
    status, body = http_json("POST", stack.urls["issuer"] + "/internal/tokens", raw=big)
    assert (status, body["error"]) == (413, "payload_too_large")


def logged_request_ids(stack: Stack, service: str) -> set[str]:
    ids = set()
    for line in stack.logs().splitlines():
        if '"request_id"' not in line:
            continue
        try:
            entry = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        if entry.get("service") == service and entry.get("request_id"):
            ids.add(entry["request_id"])
    return ids


def wait_for_keys_log(stack: Stack, request_id: str) -> None:
    wait_until(
        lambda: request_id in logged_request_ids(stack, "keys"),
        timeout=15,
        what="the keys service logging the control call",
    )


def test_traversal_paths_get_400_and_make_no_internal_call(stack: Stack) -> None:
    g = stack.gateway
    sent: list[str] = []
    admin = mint(stack, unique("trav"), dialect="opaque", permissions=("admin",))
    for n, tenant in enumerate(TRAVERSALS):
        rid = f"trav-{secrets.token_hex(6)}-{n}"
        sent.append(rid)
        status, _, body = http(
            "GET", f"{g}/v3/tenants/{tenant}/.well-known/jwks.json", headers={"X-Request-ID": rid}
        )
        assert status in (400, 404), (tenant, status, body[:300])
        assert b"issuer" not in body and b"tenants" not in body and b"kid" not in body
    for field, path, method, extra in [
        ("token_tenant_id", "/v3/tokens", "POST", {"account_type": "user", "token_username": "u"}),
        ("tenant_id", "/v3/tokens/keys", "PUT", {}),
    ]:
        for tenant in ("../../internal/tenants?", "dev/keys/rotate?", "dev/../other"):
            rid = f"trav-{secrets.token_hex(6)}"
            sent.append(rid)
            status, body = http_json(
                method,
                g + path,
                body={field: tenant, **extra},
                headers={
                    "X-Tapis-Token": admin,
                    "X-Request-ID": rid,
                    "Content-Type": "application/json",
                },
            )
            assert (status, body["status"]) == (400, "error"), body
    # A control call that does reach the keys service, after all of the above: once it is
    # logged, any internal call made for them would have been logged before it.
    control = f"ctl-{secrets.token_hex(6)}"
    status, _, _ = http(
        "GET", f"{g}/v3/tenants/dev/.well-known/jwks.json", headers={"X-Request-ID": control}
    )
    assert status == 200
    wait_for_keys_log(stack, control)
    reached = logged_request_ids(stack, "keys") & set(sent)
    assert reached == set(), "a traversal reached the keys service"


def test_lagrello_paging_links_use_the_public_url_not_the_host_header(stack: Stack) -> None:
    token = mint(stack, unique("page"), dialect="opaque", permissions=("admin",))
    for _ in range(2):
        http_json(
            "POST",
            f"{stack.gateway}/v1/tokens",
            body={"tokenName": "p"},
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    status, body = http_json(
        "GET",
        f"{stack.gateway}/v1/tokens?size=1&page=2",
        headers={"Authorization": f"Bearer {token}", "Host": "evil.example"},
    )
    assert status == 200
    public = stack.env.get("TESSERA_PUBLIC_URL", f"http://localhost:{stack.port}")
    links = [body["paging"]["previous"], body["paging"]["next"]]
    assert links[0].startswith(f"{public}/v1/tokens?page=1"), links
    assert all("evil.example" not in link for link in links)

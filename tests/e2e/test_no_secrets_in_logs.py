"""A full run through every dialect, then every log line of every service is searched for the
credentials, passwords and private keys that went by: none may appear."""

from __future__ import annotations

import base64
import json

import pytest
from tapipy.tapis import Tapis

from tests.conftest import Stack
from tests.e2e.gateway_support import ensure_tenant, http_json, mint, unique

pytestmark = pytest.mark.e2e


def test_no_secret_reaches_any_log_line(stack: Stack) -> None:
    g = stack.gateway
    secrets: list[str] = []
    user = unique("logs")
    admin = mint(stack, user, permissions=("admin",), dialect="opaque")
    dapi = mint(stack, user)
    jwt_token = mint(stack, user, dialect="tapis", permissions=("keys:rotate",))
    secrets += [admin, dapi, jwt_token]
    bearer = {"Authorization": f"Bearer {dapi}", "Content-Type": "application/json"}

    # Databricks: create, list, delete, a wrong credential.
    status, made = http_json(
        "POST", f"{g}/api/2.0/token/create", body={"comment": "c"}, headers=bearer
    )
    assert status == 200
    secrets.append(made["token_value"])
    http_json("GET", f"{g}/api/2.0/token/list", headers=bearer)
    http_json(
        "POST",
        f"{g}/api/2.0/token/delete",
        body={"token_id": made["token_info"]["token_id"]},
        headers=bearer,
    )
    wrong = "dapi" + "f" * 32
    secrets.append(wrong)
    http_json("GET", f"{g}/api/2.0/token/list", headers={"Authorization": f"Bearer {wrong}"})

    # Lagrello: create, list, delete by credential.
    lag = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    _, token = http_json("POST", f"{g}/v1/tokens", body={"tokenName": "l"}, headers=lag)
    secrets.append(token["tokenKey"])
    http_json("GET", f"{g}/v1/tokens", headers=lag)
    http_json("DELETE", f"{g}/v1/tokens/{token['tokenKey']}", headers=lag)

    # jobmanager: the token travels in the query string on revoke.
    _, job = http_json("POST", f"{g}/v1/api_access_token?identity={user}")
    secrets.append(job["token"])
    http_json("DELETE", f"{g}/v1/api_access_token?identity={user}&token={job['token']}")

    # Tapis with tapipy: Basic with a password, refresh, revoke, key rotation.
    client = Tapis(base_url=g, tenant_id="dev", username=user)
    client.service_password = dapi
    pair = client.tokens.create_token(
        token_username=user, token_tenant_id="dev", account_type="user", generate_refresh_token=True
    )
    renewed = client.tokens.refresh_token(refresh_token=pair.refresh_token.refresh_token)
    client.tokens.revoke_token(token=renewed.access_token.access_token)
    secrets += [
        pair.access_token.access_token,
        pair.refresh_token.refresh_token,
        renewed.access_token.access_token,
        renewed.refresh_token.refresh_token,
    ]
    rotated = Tapis(base_url=g, tenant_id="dev", jwt=jwt_token).tokens.update_keys(tenant_id="dev")
    # A wrong Basic password is a secret too.
    bad_password = "not-the-password-" + unique("pw")
    secrets.append(bad_password)
    basic = base64.b64encode(f"{user}:{bad_password}".encode()).decode()
    http_json(
        "POST",
        f"{g}/v3/tokens",
        body={"account_type": "user", "token_tenant_id": "dev", "token_username": user},
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
    )
    # Introspection and RFC 7009 revocation carry tokens in form bodies.
    form = {"Authorization": f"Bearer {admin}", "Content-Type": "application/x-www-form-urlencoded"}
    http_json("POST", f"{g}/oauth2/introspect", raw=f"token={dapi}".encode(), headers=form)
    http_json("POST", f"{g}/oauth2/revoke", raw=f"token={dapi}".encode(), headers=form)
    ensure_tenant(stack, "other")

    logs = stack.logs()
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    assert len(lines) > 50 and all(json.loads(line) for line in lines)  # the logs are real
    for secret in secrets:
        for part in secret.split(".") if secret.count(".") == 2 else [secret]:
            if len(part) >= 20:  # a JWT's short header segment is not secret
                assert part not in logs, f"a credential appears in the logs: {part[:8]}…"
    assert "PRIVATE KEY" not in logs
    public = rotated.public_key.split("-----")[2].replace("\n", "")
    assert public[:40] not in logs.replace("\\n", "")  # not even public key material is logged
    assert "Traceback" not in logs

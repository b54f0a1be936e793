"""The internal plane (issue 16): mutual TLS, one table of callers per service, ops listeners,
certificates reloaded from disk. Real services, real sockets, real certificates."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.issuer.handlers import CALLERS as ISSUER_CALLERS
from services.keys.handlers import CALLERS as KEYS_CALLERS
from services.revocation.handlers import CALLERS as REVOCATION_CALLERS
from shared.pki import IDENTITIES, init_pki, issue, load_ca, write_identity
from shared.tls import ReloadingTls, TesseraConnector, TlsFiles
from tests.conftest import private_env
from tests.harness import Services, running_stack
from tests.integration.keys_support import running_keys
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

TABLES = {"issuer": ISSUER_CALLERS, "keys": KEYS_CALLERS, "revocation": REVOCATION_CALLERS}
REFUSED_AT_HANDSHAKE = (aiohttp.ClientError, ssl.SSLError, ConnectionError)


def session_for(files: TlsFiles | None) -> aiohttp.ClientSession:
    """A client presenting ``files``' certificate, or none at all; a new connection per
    request, so each one is a new handshake."""
    if files is None:
        # Trusts the servers (it is only its own certificate that is missing).
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False, force_close=True))
    connector = TesseraConnector(ReloadingTls(files, check_every=0), force_close=True)
    return aiohttp.ClientSession(connector=connector)


async def status_of(session: aiohttp.ClientSession, method: str, url: str) -> int | str:
    """The status, or ``"handshake"`` when the connection was refused before any answer."""
    body = {} if method == "POST" else None
    try:
        async with session.request(method, url, json=body) as resp:
            await resp.read()
            return resp.status
    except REFUSED_AT_HANDSHAKE:
        return "handshake"


async def state(s: Services, tenant: str) -> dict[str, Any]:
    """Everything a refused call could have changed."""
    _, tenants = await s.call("GET", "keys", "/internal/tenants")
    _, keys = await s.call("GET", "keys", f"/internal/tenants/{tenant}/keys")
    _, tokens = await s.call(
        "GET", "issuer", f"/internal/tokens?tenant={tenant}&include_inactive=1&limit=1000"
    )
    _, feed = await s.call("GET", "revocation", "/internal/revocations?since=0")
    return {"tenants": tenants, "keys": keys, "tokens": tokens, "feed": feed["current_seq"]}


def outsiders(pki_dir: Path, tmp_path: Path) -> dict[str, TlsFiles | None]:
    """Clients that must never get past the handshake."""
    other = tmp_path / "other-ca"
    init_pki(other)
    expired_dir = tmp_path / "expired"
    expired_dir.mkdir()
    shutil.copy(pki_dir / "ca.pem", expired_dir / "ca.pem")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert, key = issue(
        load_ca(pki_dir),
        "operator",
        not_before=long_ago,
        not_after=long_ago + dt.timedelta(days=1),
    )
    write_identity(expired_dir, "operator", cert, key)
    return {
        "no certificate": None,
        "another CA": TlsFiles.from_dir(other, "operator"),
        "expired": TlsFiles.from_dir(expired_dir, "operator"),
    }


async def test_every_internal_endpoint_serves_exactly_the_callers_its_table_names(
    tessera_env: dict[str, str], pki_dir: Path, tmp_path: Path
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant()
        before = await state(s, tenant)
        clients: dict[str, TlsFiles | None] = {
            **outsiders(pki_dir, tmp_path),
            **{identity: TlsFiles.from_dir(pki_dir, identity) for identity in IDENTITIES},
        }
        outcomes: dict[tuple[str, str, str], int | str] = {}
        allowed_calls = []
        for service, table in TABLES.items():
            for route, callers in table.items():
                method, path = route.split(" ", 1)
                url = s.urls[service] + path.format(tenant=tenant, kid="no-such-kid")
                for name, files in clients.items():
                    if name in callers:
                        allowed_calls.append((service, route, name, method, url, files))
                        continue
                    async with session_for(files) as session:
                        outcomes[service, route, name] = await status_of(session, method, url)
        expected = {key: ("handshake" if key[2] not in IDENTITIES else 403) for key in outcomes}
        assert outcomes == expected
        # Nothing any refused call asked for happened.
        assert await state(s, tenant) == before
        # Every caller a table names gets past the handshake and the check.
        for service, route, name, method, url, files in allowed_calls:
            async with session_for(files) as session:
                status = await status_of(session, method, url)
            assert status not in ("handshake", 403), (service, route, name, status)


async def test_the_gateway_identity_cannot_sign_create_tenants_or_mint_beyond_a_principal(
    tessera_env: dict[str, str], pki_dir: Path
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant()
        gateway = session_for(TlsFiles.from_dir(pki_dir, "gateway"))
        async with gateway:

            async def post(service: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
                async with gateway.post(s.urls[service] + path, json=body) as resp:
                    return resp.status, await resp.json()

            claims = {"sub": "attacker", "exp": 4102444800, "tessera/permissions": ["admin"]}
            assert (await post("keys", f"/internal/tenants/{tenant}/sign", {"claims": [claims]}))[
                0
            ] == 403
            assert (await post("keys", "/internal/tenants", {"id": "victim"}))[0] == 403
            mint = {"tenant": tenant, "subject": "attacker", "kind": "opaque"}
            # Claiming to mint as the operator is refused: only the operator's certificate is.
            status, body = await post(
                "issuer",
                "/internal/tokens",
                {**mint, "permissions": ["admin"], "minter": {"kind": "operator"}},
            )
            assert status == 403, body
            # A user without rights cannot be made to mint an admin credential ...
            user = {"kind": "user", "tenant": tenant, "subject": "attacker", "permissions": []}
            status, body = await post(
                "issuer", "/internal/tokens", {**mint, "permissions": ["admin"], "minter": user}
            )
            assert status == 403, body
            # ... nor a credential in another tenant, nor a Tapis JWT beyond its rights.
            other = {**user, "tenant": "elsewhere"}
            status, body = await post("issuer", "/internal/tokens", {**mint, "minter": other})
            assert status == 403, body
            jwt_body = {
                "tenant": tenant,
                "username": "someone-else",
                "account_type": "user",
                "minter": user,
            }
            status, body = await post("issuer", "/internal/jwt", jwt_body)
            assert status == 403, body
            # What the user could have (its own token, no rights) is served.
            status, body = await post("issuer", "/internal/tokens", {**mint, "minter": user})
            assert status == 200, body
        _, tokens = await s.call("GET", "issuer", f"/internal/tokens?tenant={tenant}")
        assert [t["permissions"] for t in tokens["tokens"]] == [[]]


async def test_probes_and_metrics_answer_on_the_ops_port_without_a_certificate(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s, aiohttp.ClientSession() as plain:
        for service, ops in s.ops.items():
            for path in ("/healthz", "/readyz", "/metrics"):
                async with plain.get(ops + path) as resp:
                    assert resp.status == 200, (service, path)
            # The ops listener serves nothing else.
            async with plain.get(ops + "/internal/tenants") as resp:
                assert resp.status == 404
            # And the API listener neither probes nor metrics, nor anything in clear.
            api = s.urls[service].replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(api + "/healthz") as resp:
                    await resp.read()


async def test_replaced_certificate_files_are_used_without_a_restart(
    tessera_env: dict[str, str], pki_dir: Path, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    shutil.copytree(pki_dir, served)
    env = private_env(tessera_env, TESSERA_TLS_DIR=str(served))
    old_operator = TlsFiles.from_dir(pki_dir, "operator")
    new_pki = tmp_path / "new"
    init_pki(new_pki)
    new_operator = TlsFiles.from_dir(new_pki, "operator")
    async with running_keys(env) as (url, _session):

        async def answer(files: TlsFiles) -> int | str:
            async with session_for(files) as session:
                return await status_of(session, "GET", f"{url}/internal/tenants")

        assert await answer(old_operator) == 200
        assert await answer(new_operator) == "handshake"
        # An operator replaces the files (each one atomically, as `tessera pki` does).
        for name in ("keys-key.pem", "keys.pem", "ca.pem"):
            (served / f".{name}").write_bytes((new_pki / name).read_bytes())
            (served / f".{name}").replace(served / name)

        async def new_ca_served() -> bool:
            return await answer(new_operator) == 200

        await wait_for(new_ca_served, timeout=15, what="the new certificates served")
        assert await answer(old_operator) == "handshake"

"""Least privilege in storage: ``tessera migrate --admin-url`` gives each service a role of its
own that owns its database and nothing else, and migrates as that role."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.cli.migrate import migrate_all, migration_components
from shared.db import drop_database, migrate
from shared.dbroles import drop_role, provision
from shared.settings import DATABASE_SERVICES, service_database_url
from tests.conftest import Infra

pytestmark = pytest.mark.integration


def as_role(admin_url: str, role: str, password: str, database: str) -> str:
    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}:{password}@{host}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


def on_database(admin_url: str, database: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{database}"))


@pytest.fixture
async def roles_env(infra: Infra) -> AsyncIterator[dict[str, str]]:
    """Per-service URLs naming roles that do not exist yet; everything dropped afterwards."""
    prefix = f"troles_{secrets.token_hex(4)}"
    env = {"TESSERA_DATABASE_URL": infra.database_url, "TESSERA_DATABASE_PREFIX": prefix}
    for service in DATABASE_SERVICES:
        name = f"{prefix}_{service}"
        env[f"TESSERA_{service.upper()}_DATABASE_URL"] = as_role(
            infra.database_url, name, secrets.token_urlsafe(16), name
        )
    try:
        yield env
    finally:
        for service in DATABASE_SERVICES:
            name = f"{prefix}_{service}"
            await drop_database(on_database(infra.database_url, name))
            await drop_role(infra.database_url, name)


async def owner_of(admin_url: str, database: str) -> tuple[str, set[str]]:
    """The database's owner and the owners of every table in its public schema."""
    conn = await asyncpg.connect(on_database(admin_url, database))
    try:
        db_owner = await conn.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
        )
        tables = await conn.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
        return db_owner, {row["tableowner"] for row in tables}
    finally:
        await conn.close()


async def test_each_service_owns_its_database_and_can_open_no_other(
    infra: Infra, roles_env: dict[str, str]
) -> None:
    admin = infra.database_url
    applied = await migrate_all(roles_env, list(DATABASE_SERVICES), admin)
    assert applied, "the migrations ran"
    prefix = roles_env["TESSERA_DATABASE_PREFIX"]
    for service in DATABASE_SERVICES:
        role = f"{prefix}_{service}"
        db_owner, table_owners = await owner_of(admin, role)
        assert db_owner == role
        assert table_owners == {role}, f"{service}: tables owned by {table_owners}"
        conn = await asyncpg.connect(admin)
        try:
            attrs = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles"
                " WHERE rolname = $1",
                role,
            )
        finally:
            await conn.close()
        assert dict(attrs) == {
            "rolsuper": False,
            "rolcreatedb": False,
            "rolcreaterole": False,
            "rolcanlogin": True,
        }
        # Its own database: yes. Every other service's: refused by the server.
        own = await asyncpg.connect(service_database_url(roles_env, service))
        await own.close()
        for other in DATABASE_SERVICES:
            if other == service:
                continue
            foreign = as_role(admin, role, "x", f"{prefix}_{other}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await asyncpg.connect(foreign)


async def test_provisioning_is_idempotent_and_adopts_an_install_migrated_as_admin(
    infra: Infra, roles_env: dict[str, str]
) -> None:
    admin = infra.database_url
    prefix = roles_env["TESSERA_DATABASE_PREFIX"]
    # An install from before roles: everything migrated as the admin.
    for service in DATABASE_SERVICES:
        await migrate(on_database(admin, f"{prefix}_{service}"), migration_components(service))
    db_owner, table_owners = await owner_of(admin, f"{prefix}_issuer")
    assert f"{prefix}_issuer" not in {db_owner, *table_owners}

    await migrate_all(roles_env, list(DATABASE_SERVICES), admin)
    assert await migrate_all(roles_env, list(DATABASE_SERVICES), admin) == []
    for service in DATABASE_SERVICES:
        role = f"{prefix}_{service}"
        assert await owner_of(admin, role) == (role, {role})
        # The role can use what it was handed: it writes to its own tables.
        conn = await asyncpg.connect(service_database_url(roles_env, service))
        try:
            await conn.fetchval("SELECT count(*) FROM schema_version")
            await conn.execute("CREATE TABLE probe (id int)")
            await conn.execute("DROP TABLE probe")
        finally:
            await conn.close()


async def test_without_a_role_in_the_url_nothing_is_provisioned(infra: Infra) -> None:
    """An install that connects as the admin keeps working as before (no role, no revoke)."""
    assert await provision(infra.database_url, infra.database_url) is None

"""Least privilege in storage: each service connects to PostgreSQL as its own role, which owns
its own database and may connect to no other.

``tessera migrate`` given an admin URL (``--admin-url`` or ``TESSERA_DATABASE_ADMIN_URL``)
provisions, for every service whose database URL names a user other than the admin:

- the role, ``LOGIN`` and nothing more (no superuser, no ``CREATEDB``, no ``CREATEROLE``), its
  password set from the service's URL when the URL carries one;
- the service's database, created owned by that role (or handed to it);
- ``CONNECT`` on that database revoked from ``PUBLIC`` and granted to the role alone, so the
  issuer's role cannot open the keys database, nor any other role but an admin's;
- the tables, sequences, views and functions an earlier migration left owned by someone else
  (an install that ran everything as one role) handed over to the role.

Then the migrations run as the service's role, so what they create is the role's. Every step is
idempotent: run it on every deploy. Names are checked against a strict pattern before they are
spliced into SQL (identifiers cannot be parameters); a password goes through the server's own
``format('%L')`` quoting, and is never logged.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger("tessera.dbroles")

_NAME = re.compile(r"[A-Za-z0-9_]{1,63}")

# Objects of a service's schema handed to its role, by pg_class relkind.
_RELATION_KINDS = {
    "r": "TABLE",
    "p": "TABLE",
    "S": "SEQUENCE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
}


def _checked(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"unsupported {kind} name {name!r} (letters, digits and _ only)")
    return name


@dataclass(frozen=True)
class ServiceRole:
    """The role and database a service's URL names."""

    role: str
    database: str
    password: str | None = field(repr=False)

    @classmethod
    def from_url(cls, url: str) -> ServiceRole | None:
        """None when the URL names no user (the connection's default user is the admin's)."""
        parts = urlsplit(url)
        if not parts.username:
            return None
        return cls(
            role=_checked("role", unquote(parts.username)),
            database=_checked("database", unquote(parts.path.lstrip("/"))),
            password=unquote(parts.password) if parts.password else None,
        )


def _admin_user(admin: asyncpg.Connection) -> str:
    return str(admin.get_settings().session_authorization or "")


async def provision(admin_url: str, service_url: str) -> ServiceRole | None:
    """Give the service of ``service_url`` its own role and database (see the module doc);
    None, and nothing done, when that URL connects as the admin itself."""
    wanted = ServiceRole.from_url(service_url)
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        if wanted is None or wanted.role == _admin_user(admin):
            return None
        role, database = wanted.role, wanted.database
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            # Another migrate may create it a moment before us.
            with contextlib.suppress(asyncpg.DuplicateObjectError):
                await admin.execute(f'CREATE ROLE "{role}"')
        await admin.execute(
            f'ALTER ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION'
            " NOBYPASSRLS"
        )
        if wanted.password is not None:
            statement = await admin.fetchval(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                role,
                wanted.password,
            )
            await admin.execute(statement)
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await admin.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
        else:
            try:
                await admin.execute(f'CREATE DATABASE "{database}" OWNER "{role}"')
            except asyncpg.DuplicateDatabaseError:
                await admin.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
        await admin.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
        await admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{role}"')
    finally:
        await admin.close()
    await _hand_over_objects(admin_url, wanted)
    log.info("database role provisioned", role=wanted.role, database=wanted.database)
    return wanted


async def _hand_over_objects(admin_url: str, wanted: ServiceRole) -> None:
    """Make the role the owner of everything in its database's ``public`` schema."""
    parts = urlsplit(admin_url)
    conn = await asyncpg.connect(urlunsplit(parts._replace(path=f"/{wanted.database}")), timeout=10)
    try:
        async with conn.transaction():
            relations = await conn.fetch(
                """SELECT c.relname, c.relkind::text AS relkind FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relkind::text = ANY($1::text[])
                     AND pg_get_userbyid(c.relowner) <> $2
                     -- a sequence owned by a column follows its table
                     AND NOT (c.relkind = 'S' AND EXISTS (
                         SELECT 1 FROM pg_depend d
                         WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))""",
                list(_RELATION_KINDS),
                wanted.role,
            )
            for row in relations:
                kind = _RELATION_KINDS[row["relkind"]]
                statement = await conn.fetchval(
                    f"SELECT format('ALTER {kind} public.%I OWNER TO %I', $1::text, $2::text)",
                    row["relname"],
                    wanted.role,
                )
                await conn.execute(statement)
            functions = await conn.fetch(
                """SELECT p.oid::regprocedure::text AS signature FROM pg_proc p
                   JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1""",
                wanted.role,
            )
            for row in functions:
                # regprocedure's text is already a quoted, schema-resolvable signature.
                statement = await conn.fetchval(
                    "SELECT format('ALTER FUNCTION %s OWNER TO %I', $1::text, $2::text)",
                    row["signature"],
                    wanted.role,
                )
                await conn.execute(statement)
    finally:
        await conn.close()


async def drop_role(admin_url: str, role: str) -> None:
    """Drop a service role (tests clean up with this; its databases must be gone first)."""
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP ROLE IF EXISTS "{_checked("role", role)}"')
    finally:
        await conn.close()

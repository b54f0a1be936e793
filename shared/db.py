"""PostgreSQL: the pool, database creation, and numbered plain-SQL migrations.

Each service owns one database. Migrations live beside the code as ``NNNN_name.sql`` files in
one or more components (the shared bus tables, then the service's own); each file is applied in
one transaction together with its row in ``schema_version``, under an advisory lock so several
replicas starting at once apply each file exactly once.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger("tessera.db")

BUS_MIGRATIONS = Path(__file__).parent / "bus" / "migrations"
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same in every replica.
_MIGRATION_LOCK = 7_345_210_001


# What a request meets while no PostgreSQL primary answers (issue 18): the server is gone or
# refuses connections (starting up, shutting down, in recovery), no listed host is read-write
# (``target_session_attrs=read-write``), a pooled connection points at a server that is no
# longer the primary, or connecting takes longer than the pool's timeout. Answered 503 with
# Retry-After by the internal services; consumers requeue, the relay retries.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    OSError,
    TimeoutError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
    conn.add_query_logger(_discard_if_demoted(conn))


# Server process ids of pooled connections whose server turned out read-only.
_demoted: set[int] = set()


def _discard_if_demoted(conn: asyncpg.Connection) -> Callable[[Any], None]:
    """A query logger marking ``conn`` once a write fails because its server is read-only: the
    server stopped being the primary (a failover). The connection is closed when it goes back
    to the pool (closing it while checked out confuses asyncpg's pool), and the pool opens a
    new one, which ``target_session_attrs=read-write`` sends to the new primary."""

    def check(record: Any) -> None:
        if isinstance(record.exception, asyncpg.exceptions.ReadOnlySQLTransactionError):
            _demoted.add(conn.get_server_pid())

    return check


def columns(rows: Iterable[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column (``width`` of them, even for no rows): the arguments of an
    ``unnest($1::T[], $2::U[], ...)`` that inserts many rows in one statement."""
    out: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(out, row, strict=True):
            column.append(value)
    return out


async def _release(conn: asyncpg.Connection) -> None:
    """Make a released connection reusable with no round trip when it is clean.

    asyncpg's default reset sends RESET ALL / UNLISTEN * / advisory unlocks on every release,
    one more round trip per request; Tessera keeps no session state on pooled connections
    (advisory locks are transaction-scoped, listeners are removed before release), so only a
    transaction left open needs undoing.
    """
    pid = conn.get_server_pid()
    if pid in _demoted:
        _demoted.discard(pid)
        log.warning("database connection discarded: its server is no longer the primary")
        conn.terminate()
    elif conn.is_in_transaction():
        await conn.execute("ROLLBACK")


@asynccontextmanager
async def create_pool(
    database_url: str, *, min_size: int = 2, max_size: int = 10
) -> AsyncIterator[asyncpg.Pool]:
    """A pool with json/jsonb decoded to Python objects; closed when the block ends."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_release,
        timeout=10,
    )
    try:
        yield pool
    finally:
        await pool.close()


class UnitOfWork:
    """The transaction :func:`unit_of_work` runs, and what is to happen once it has committed."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (once, however often it is asked for) if the transaction commits."""
        if callback not in self._after_commit:
            self._after_commit.append(callback)

    def committed(self) -> None:
        """Run the after-commit callbacks, in the order they were asked for."""
        for callback in self._after_commit:
            callback()


# The unit of work of the running task (and of tasks it starts), if any.
_current_work: ContextVar[UnitOfWork | None] = ContextVar("tessera_unit_of_work", default=None)


@asynccontextmanager
async def unit_of_work(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in one transaction, committed when the block ends without an
    exception; then what was asked for with :func:`after_commit` runs (the outbox wakes its
    relay this way, exactly when the new events become visible)."""
    async with pool.acquire() as conn:
        work = UnitOfWork(conn)
        token = _current_work.set(work)
        try:
            async with conn.transaction():
                yield conn
        finally:
            _current_work.reset(token)
        work.committed()


def after_commit(conn: asyncpg.Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once what ``conn`` has just written is committed: when its
    :func:`unit_of_work` commits, or at once if ``conn`` is in no transaction (the statement
    committed by itself). A transaction opened some other way has no end we could see: that is
    a programming error, refused here rather than left to the relay's next poll."""
    work = _current_work.get()
    if work is not None and work.conn is conn:
        work.after_commit(callback)
    elif not conn.is_in_transaction():
        callback()
    else:
        raise RuntimeError("a transaction that must be followed up is not a shared.db.unit_of_work")


def describe_database(database_url: str) -> str:
    """``host:port/dbname`` of a URL, for messages; never the password. A libpq multi-host URL
    (``postgresql://h1:5432,h2:5432/db``) gives ``h1:5432,h2:5432/db``."""
    parts = urlsplit(database_url)
    hosts = parts.netloc.rpartition("@")[2]
    described = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not name or not port.isdigit():
            name, port = host, "5432"
        described.append(f"{name}:{port}")
    return f"{','.join(described)}{parts.path}"


async def ensure_database(database_url: str) -> bool:
    """Create the database a URL names if it does not exist. True when it was created."""
    parts = urlsplit(database_url)
    name = unquote(parts.path.lstrip("/"))
    if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", name):
        raise ValueError(f"unsupported database name {name!r}")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            # Identifiers cannot be parameters; the name was checked against a strict pattern.
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False  # another replica created it a moment ago
        return True
    finally:
        await conn.close()


async def drop_database(database_url: str) -> None:
    """Drop a database (tests use this to clean up); its connections are terminated first."""
    parts = urlsplit(database_url)
    name = unquote(parts.path.lstrip("/"))
    if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", name):
        raise ValueError(f"unsupported database name {name!r}")
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass(frozen=True)
class Migration:
    """One migration file: ``NNNN_name.sql`` of a component (``bus`` or a service)."""

    component: str
    version: int
    name: str
    path: Path


def discover(component: str, directory: Path) -> list[Migration]:
    """The migrations of ``directory`` in version order; ``ValueError`` for a misnamed file."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path} is not named NNNN_name.sql")
        found.append(Migration(component, int(match.group(1)), path.stem, path))
    return found


async def migrate(database_url: str, components: list[tuple[str, Path]]) -> list[str]:
    """Create the database if needed and apply every pending migration; returns their names."""
    await ensure_database(database_url)
    conn = await asyncpg.connect(database_url, timeout=10)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   component text NOT NULL,
                   version integer NOT NULL,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        for component, directory in components:
            done = {
                r["version"]
                for r in await conn.fetch(
                    "SELECT version FROM schema_version WHERE component = $1", component
                )
            }
            for migration in discover(component, directory):
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_version (component, version, name) VALUES ($1, $2, $3)",
                        component,
                        migration.version,
                        migration.name,
                    )
                applied.append(f"{component}/{migration.name}")
                log.info("migration applied", component=component, migration=migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied

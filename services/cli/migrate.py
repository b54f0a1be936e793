"""``tessera migrate``: each service's database (and, with an admin URL, its own role)."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.settings import DATABASE_SERVICES, get_log_level, get_secret, service_database_url

SERVICES_DIR = Path(__file__).resolve().parent.parent


def migration_components(service: str) -> list[tuple[str, Path]]:
    """The migration directories of one service's database: the outbox's, then its own."""
    from shared.db import BUS_MIGRATIONS

    return [("bus", BUS_MIGRATIONS), (service, SERVICES_DIR / service / "migrations")]


async def migrate_all(env: Any, services: Sequence[str], admin_url: str | None = None) -> list[str]:
    """Apply every pending migration of the given services, each to its own database. With
    ``admin_url``, first give each service its own role and database (``shared.dbroles``), and
    migrate as that role."""
    import asyncpg

    from shared.db import describe_database, migrate
    from shared.dbroles import provision
    from shared.service import fail

    applied = []
    for service in services:
        url = service_database_url(env, service)
        try:
            if admin_url:
                await provision(admin_url, url)
            applied += await migrate(url, migration_components(service))
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
            fail(
                f"cannot reach PostgreSQL at {describe_database(url)}: {type(exc).__name__}: {exc}"
            )
    return applied


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.logging import configure_logging, get_logger

    services = [args.service] if args.service else list(DATABASE_SERVICES)
    # JSON lines like every service's: "migration applied" per file, then one summary.
    configure_logging("migrate", get_log_level(os.environ))
    admin_url = args.admin_url or get_secret(
        os.environ, "TESSERA_DATABASE_ADMIN_URL", required=False
    )
    applied = asyncio.run(migrate_all(os.environ, services, admin_url or None))
    get_logger("tessera.migrate").info(
        "migrations up to date", services=services, applied=len(applied)
    )
    return 0

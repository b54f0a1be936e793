"""The ``tessera`` command: serve, dev, migrate, and the operator commands of each service.

Each service may contribute subcommands through ``register(subparsers)`` in its
``commands`` module; this file only wires them together.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.settings import (
    DATABASE_SERVICES,
    SERVICES,
    CommonSettings,
    ConfigError,
    get_log_level,
    get_secret,
    service_database_url,
)

SERVICES_DIR = Path(__file__).parent
COMMAND_MODULES = (
    "services.keys.commands",
    "services.issuer.commands",
    "services.audit",
    "services.pki",
)


def migration_components(service: str) -> list[tuple[str, Path]]:
    from shared.db import BUS_MIGRATIONS

    return [("bus", BUS_MIGRATIONS), (service, SERVICES_DIR / service / "migrations")]


def create_service_app(service: str, env: Any) -> tuple[Any, CommonSettings]:
    """Build one service's app from the environment: (app, the settings every service has)."""
    module = importlib.import_module(f"services.{service}.app")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings = settings_module.Settings.from_env(env)
    common: CommonSettings = settings.common
    return module.create_app(settings), common


def cmd_serve(args: argparse.Namespace) -> int:
    from shared.logging import configure_logging
    from shared.service import run_app

    app, common = create_service_app(args.service, os.environ)
    configure_logging(args.service, common.log_level)
    run_app(app, common)
    return 0


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


def cmd_dev(args: argparse.Namespace) -> int:
    from services.dev import run_dev

    return run_dev(os.environ, port=args.port, host=args.host)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera token authority")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--service", choices=DATABASE_SERVICES)
    migrate.add_argument(
        "--admin-url",
        metavar="URL",
        help="a PostgreSQL URL allowed to create roles and databases: give each service its"
        " own role (the user of its TESSERA_<SERVICE>_DATABASE_URL) owning only its database"
        " (default: TESSERA_DATABASE_ADMIN_URL)",
    )
    migrate.set_defaults(func=cmd_migrate)

    dev = sub.add_parser("dev", help="run migrations and all four services on this machine")
    dev.add_argument("--port", type=int, default=8080, help="gateway port (others follow it)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(func=cmd_dev)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    code: int | str | None
    try:
        try:
            args = build_parser().parse_args(argv)
            code = args.func(args)
        except ConfigError as exc:
            print(f"tessera: configuration error: {exc}", file=sys.stderr)
            code = 2
        except SystemExit as exc:  # --help, a usage error, or fail(): stdout still to flush
            code = exc.code
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`tessera … | head`): not an error of ours, and no traceback.
        # stdout is pointed at /dev/null so the interpreter's last flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, as a shell reports a command whose reader went away
    raise SystemExit(code)


if __name__ == "__main__":
    main()

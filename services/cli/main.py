"""The ``tessera`` command: serve, dev, migrate, and the operator commands.

Each module of this package holds one group of subcommands (``register(subparsers)``); this one
only wires them together. The CLI imports the services and ``shared``; nothing imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from services.cli import audit, issuer, keys, pki
from services.cli.dev import run_dev
from services.cli.migrate import cmd_migrate
from services.cli.serve import cmd_serve
from shared.settings import DATABASE_SERVICES, SERVICES, ConfigError

# The operator commands, each module adding its own subcommands with register(subparsers).
COMMAND_MODULES = (keys, issuer, audit, pki)


def cmd_dev(args: argparse.Namespace) -> int:
    """Run the whole stack on this machine (``tessera dev``)."""
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

    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one ``tessera`` command and exit with its code (2 for a configuration error)."""
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

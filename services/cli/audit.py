"""``tessera audit --tenant T``: the audit trail of one tenant, merged from every service.

Each service appends a row to its own ``audit_log`` for every event it emits (see
``shared.bus.outbox.add_event``); this command reads the three trails and prints them in time
order as JSON lines: time, action, source service, actor, request id and the event data (which
never holds a secret).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import describe_database
from shared.devstack import with_stack_databases
from shared.service import fail
from shared.settings import DATABASE_SERVICES, service_database_url


async def read_trail(
    env: Any, tenant: str, since: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries of a tenant across all services, oldest first."""
    entries: list[dict[str, Any]] = []
    for service in DATABASE_SERVICES:
        url = service_database_url(env, service)
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            fail(f"cannot read the audit trail at {describe_database(url)}: {exc}")
        try:
            rows = await conn.fetch(
                """SELECT occurred_at, action, source, actor, request_id, data::text AS data,
                          event_id
                   FROM audit_log
                   WHERE tenant = $1 AND ($2::timestamptz IS NULL OR occurred_at >= $2)
                   ORDER BY occurred_at DESC LIMIT $3""",
                tenant,
                since,
                limit,
            )
        finally:
            await conn.close()
        entries += [
            {
                "time": r["occurred_at"].isoformat(),
                "action": r["action"],
                "source": r["source"],
                "actor": r["actor"],
                "request_id": r["request_id"],
                "event_id": str(r["event_id"]),
                "data": json.loads(r["data"]),
            }
            for r in rows
        ]
    entries.sort(key=lambda e: e["time"])
    return entries[-limit:]


def cmd_audit(args: argparse.Namespace) -> int:
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            fail(f"--since must be an ISO 8601 time, got {args.since!r}", 2)
    env = with_stack_databases(os.environ)  # no database set: the running `tessera dev`'s
    for entry in asyncio.run(read_trail(env, args.tenant, since, args.limit)):
        print(json.dumps(entry, separators=(",", ":")))
    return 0


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="print a tenant's audit trail (JSON lines)")
    audit.add_argument("--tenant", required=True)
    audit.add_argument("--since", help="only entries at or after this ISO 8601 time")
    audit.add_argument("--limit", type=int, default=1000)
    audit.set_defaults(func=cmd_audit)

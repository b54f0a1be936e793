"""A PostgreSQL 15 primary with a synchronous streaming standby, on loopback ports of their own.

Built with initdb and ``pg_basebackup -R``, promoted with ``pg_ctl promote``; run as the
``postgres`` system user when the tests run as root (initdb refuses root). The machine's own
server (5432) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_available() -> bool:
    return all((PG_BIN / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup"))


def _as_owner() -> list[str]:
    """The command prefix running a server tool as a non-root user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresPair:
    base: Path
    primary_port: int
    standby_port: int

    @property
    def primary_dir(self) -> Path:
        return self.base / "primary"

    @property
    def standby_dir(self) -> Path:
        return self.base / "standby"

    @property
    def url(self) -> str:
        """The libpq multi-host URL naming both servers, the writable one wanted."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}"
            "/postgres?target_session_attrs=read-write"
        )

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*_as_owner(), *args], capture_output=True, text=True, timeout=timeout, cwd="/"
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]}: {result.stdout[-1500:]} {result.stderr[-1500:]}")

    def _pg_ctl(self, data: Path, *args: str) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60", *args)

    @classmethod
    def create(cls, primary_port: int, standby_port: int) -> PostgresPair:
        """A pair whose directories live in a new directory under /tmp (pytest's temporary
        directories are private to root, and the servers run as ``postgres``)."""
        base = Path(tempfile.mkdtemp(prefix="tessera-pg-"))
        base.chmod(0o755)
        return cls(base, primary_port, standby_port)

    def start(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.primary_dir), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.primary_port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                # The settings under which an acknowledged write survives a failover
                # (docs/clusters.md): the commit waits for the standby's flush.
                "synchronous_commit = on\nsynchronous_standby_names = 'standby1'\n"
                "max_connections = 200\nfsync = off\nfull_page_writes = off\n"
            )
        with (self.primary_dir / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self._pg_ctl(self.primary_dir, "-l", str(self.base / "primary.log"), "start")
        self._run(
            str(PG_BIN / "pg_basebackup"), "-D", str(self.standby_dir), "-R", "-X", "stream",
            "-d", f"host=127.0.0.1 port={self.primary_port} user=postgres "
            "application_name=standby1",
        )  # fmt: skip
        with (self.standby_dir / "postgresql.conf").open("a") as conf:
            # Once promoted it has no standby of its own: it must not wait for one.
            conf.write(f"port = {self.standby_port}\nsynchronous_standby_names = ''\n")
        self._pg_ctl(self.standby_dir, "-l", str(self.base / "standby.log"), "start")

    def kill_primary(self) -> None:
        """Stop the primary at once, as a crash would (no shutdown checkpoint)."""
        self._pg_ctl(self.primary_dir, "-m", "immediate", "stop")

    def promote_standby(self) -> None:
        self._pg_ctl(self.standby_dir, "promote")

    def stop(self) -> None:
        for data in (self.primary_dir, self.standby_dir):
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    self._pg_ctl(data, "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def wait_for_sync_standby(pair: PostgresPair, timeout: float = 60) -> None:
    """Until the primary reports its standby as synchronous."""
    import asyncio

    import asyncpg

    async def check() -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                conn = await asyncpg.connect(
                    f"postgresql://postgres@127.0.0.1:{pair.primary_port}/postgres"
                )
                try:
                    state = await conn.fetchval(
                        "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                        "standby1",
                    )
                finally:
                    await conn.close()
                if state == "sync":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the standby never became synchronous")
            await asyncio.sleep(0.2)

    asyncio.run(check())

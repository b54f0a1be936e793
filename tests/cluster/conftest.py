"""The clusters of the cluster tests: three RabbitMQ nodes, a PostgreSQL primary with a
synchronous standby, two replicas of every service. Started once per module and removed
afterwards, also when a test fails."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.postgres import PostgresPair, postgres_available, wait_for_sync_standby
from tests.cluster.rabbit import RabbitCluster, rabbit_available
from tests.cluster.stack import ReplicatedStack, cluster_env
from tests.conftest import free_port_block


@dataclass
class Clusters:
    rabbit: RabbitCluster
    postgres: PostgresPair
    stack: ReplicatedStack


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Clusters]:
    if not (rabbit_available() and postgres_available()):
        reason = "rabbitmq-server and PostgreSQL 15's initdb/pg_ctl/pg_basebackup are needed"
        if os.environ.get("CI"):
            pytest.fail(f"CI must not skip the cluster tests: {reason}")
        pytest.skip(reason)
    ports = free_port_block(8)
    rabbit = RabbitCluster.create(
        Path(tempfile.mkdtemp(prefix="tessera-mq-")), [ports + i for i in range(6)]
    )
    postgres = PostgresPair.create(ports + 6, ports + 7)
    stack: ReplicatedStack | None = None
    try:
        postgres.start()
        rabbit.start()
        wait_for_sync_standby(postgres)
        env = cluster_env(dict(os.environ), postgres.url, rabbit.url, pki_dir)
        stack = ReplicatedStack(env, tmp_path_factory.mktemp("cluster-logs"))
        stack.setup(replicas=2)
        yield Clusters(rabbit, postgres, stack)
    finally:
        if stack is not None:
            stack.stop()
        rabbit.stop()
        postgres.stop()

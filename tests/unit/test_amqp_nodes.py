"""TESSERA_AMQP_URL as a list of cluster nodes: parsed, checked and described without passwords."""

from __future__ import annotations

import pytest

from shared.bus.amqp import ClusterConnection, amqp_nodes, describe_amqp
from shared.settings import ConfigError, get_amqp_url

THREE = (
    "amqp://tessera:s3cret-one@rabbit-0:5672/prod,"
    " amqp://tessera:s3cret-two@rabbit-1:5673/prod ,amqp://tessera:s3cret-3@rabbit-2/prod"
)


def test_a_comma_separated_url_lists_one_node_each() -> None:
    url = get_amqp_url({"TESSERA_AMQP_URL": THREE})
    assert amqp_nodes(url) == [
        "amqp://tessera:s3cret-one@rabbit-0:5672/prod",
        "amqp://tessera:s3cret-two@rabbit-1:5673/prod",
        "amqp://tessera:s3cret-3@rabbit-2/prod",
    ]


def test_description_of_every_node_carries_no_password() -> None:
    described = describe_amqp(get_amqp_url({"TESSERA_AMQP_URL": THREE}))
    assert described == "rabbit-0:5672/prod,rabbit-1:5673/prod,rabbit-2:5672/prod"
    assert "s3cret" not in described


@pytest.mark.parametrize(
    "value", ["amqp://a:1@h1/,http://b:2@h2/", "amqp://a:1@h1/,amqp:///novhost", "amqp://h1/,x"]
)
def test_a_malformed_node_stops_start_up_without_showing_the_urls(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        get_amqp_url({"TESSERA_AMQP_URL": value})
    assert "TESSERA_AMQP_URL" in str(caught.value)
    assert ":1@" not in str(caught.value) and ":2@" not in str(caught.value)


async def test_each_connection_attempt_goes_to_the_next_node_and_none_shows_a_password() -> None:
    # Loopback ports nothing listens on: each attempt is refused at once, no name is resolved.
    nodes = [f"amqp://tessera:s3cret-{port}@127.0.0.1:{port}/prod" for port in (9, 19, 29)]
    connection = ClusterConnection(nodes, start=1)
    tried = []
    for _ in range(4):
        # The method aio-pika calls for every (re)connection attempt; each fails here and the
        # next one must go to the following node.
        with pytest.raises(OSError):
            await connection._RobustConnection__connect_transport()
        tried.append(connection.node)
        assert "s3cret" not in str(connection) and "s3cret" not in repr(connection)
    assert tried == [
        "127.0.0.1:19/prod",
        "127.0.0.1:29/prod",
        "127.0.0.1:9/prod",
        "127.0.0.1:19/prod",
    ]
    await connection.close()


def test_durable_queues_expire_only_when_a_run_asks() -> None:
    from shared.settings import AmqpNames

    assert AmqpNames.from_env({}).durable_arguments() == {"x-queue-type": "quorum"}
    names = AmqpNames.from_env({"TESSERA_AMQP_QUEUE_EXPIRES_SECONDS": "900"})
    assert names.durable_arguments() == {"x-queue-type": "quorum", "x-expires": 900_000}

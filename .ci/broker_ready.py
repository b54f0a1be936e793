"""CI pre-flight: the broker answers AMQP (not only TCP), after removing idle queues that earlier
test and benchmark runs left behind.

RabbitMQ gives every quorum queue file handles from a budget fixed by its open-file limit
(about 300 queues at the default 1024); past it, it accepts TCP connections and never answers
them, so a test run would hang instead of failing. Only queues named as this project's test
sessions (``t<8 hex>.``) and benchmarks (``bench.``) name them, and only those without a
consumer, are deleted; nothing else on the broker is touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys

import aio_pika

LEFTOVER = re.compile(r"^(t[0-9a-f]{8}|bench\.[0-9a-f]{8})\.")


def remove_idle_leftovers() -> int:
    rabbitmqctl = shutil.which("rabbitmqctl")
    if not rabbitmqctl:
        return 0
    listing = subprocess.run(  # noqa: S603 - a fixed command line
        [rabbitmqctl, "-q", "list_queues", "name", "consumers"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = [
        name
        for name, consumers in (
            line.split("\t") for line in listing.stdout.splitlines() if line.count("\t") == 1
        )
        if consumers == "0" and LEFTOVER.match(name)
    ]
    if names:
        quoted = ",".join(f'<<"{name}">>' for name in names)
        # The names matched LEFTOVER (letters, digits, dots, dashes, underscores): no quoting.
        subprocess.run(  # noqa: S603
            [
                rabbitmqctl,
                "eval",
                f'[catch rabbit_amqqueue:delete(Q, false, false, <<"ci-cleanup">>)'
                f" || N <- [{quoted}], {{ok, Q}} <- [rabbit_amqqueue:lookup("
                f'rabbit_misc:r(<<"/">>, queue, N))]], ok.',
            ],
            capture_output=True,
            timeout=300,
        )
    return len(names)


async def answers(url: str) -> None:
    connection = await aio_pika.connect(url, timeout=30)
    await connection.close()


def main() -> None:
    removed = remove_idle_leftovers()
    if removed:
        print(f"ci: removed {removed} idle queues left by earlier test runs")
    url = os.environ["TESSERA_TEST_AMQP_URL"]
    try:
        asyncio.run(answers(url))
    except Exception as exc:  # any failure means the broker cannot serve tests
        sys.exit(f"ci: RabbitMQ does not answer AMQP at {url.split('@')[-1]}: {exc!r}")


if __name__ == "__main__":
    main()

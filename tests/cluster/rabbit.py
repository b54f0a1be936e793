"""Three RabbitMQ nodes on loopback joined into one cluster, for the cluster tests.

Each node has its own name, ports and directories under one temporary directory, which is also
the HOME holding the shared Erlang cookie. The machine's own broker (port 5672, node
``rabbit@localhost``) is never touched: the nodes only share the machine's epmd, where they
register under names of their own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbit_available() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists() and (RABBIT_BIN / "rabbitmqctl").exists()


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@dataclass
class RabbitNode:
    name: str
    port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


@dataclass
class RabbitCluster:
    home: Path
    nodes: list[RabbitNode] = field(default_factory=list)

    @classmethod
    def create(cls, home: Path, ports: list[int]) -> RabbitCluster:
        """Three nodes' settings; ``ports`` holds six free ports (AMQP and distribution)."""
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (home / "enabled_plugins").write_text("[].\n")  # no management listener on 15672
        tag = secrets.token_hex(3)
        cluster = cls(home)
        for i in range(3):
            base = home / f"node{i}"
            base.mkdir()
            (base / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{ports[2 * i]}\n"
                # Failover tests must not wait for a dead peer for a minute.
                "net_ticktime = 10\n"
            )
            cluster.nodes.append(
                RabbitNode(f"tsr{tag}{i}@localhost", ports[2 * i], ports[2 * i + 1], base)
            )
        return cluster

    @property
    def url(self) -> str:
        """TESSERA_AMQP_URL listing the three nodes."""
        return ",".join(node.url for node in self.nodes)

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # not /etc/rabbitmq's (the machine's node)
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "LANG": "C.UTF-8",
        }
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_NODE_PORT=str(node.port),
                RABBITMQ_DIST_PORT=str(node.dist_port),
                RABBITMQ_MNESIA_BASE=str(node.base / "mnesia"),
                RABBITMQ_LOG_BASE=str(node.base / "log"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
                RABBITMQ_CONFIG_FILE=str(node.base / "rabbitmq"),
                RABBITMQ_PID_FILE=str(node.base / "pid"),
                ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
        return env

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", node.name, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr[-2000:]}")
        return result.stdout

    def start_node(self, node: RabbitNode) -> None:
        """Start one node (again) and wait until it serves AMQP."""
        self._spawn(node)
        self._wait_serving(node)

    def _spawn(self, node: RabbitNode) -> None:
        log = (node.base / "server.log").open("ab")
        node.process = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")],
            env=self._env(node),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a kill reaches the Erlang VM, not only the script
        )

    def _wait_serving(self, node: RabbitNode) -> None:
        assert node.process is not None
        deadline = time.monotonic() + 120
        while not port_open(node.port):
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {self.tail(node)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} did not open {node.port}: {self.tail(node)}")
            time.sleep(0.2)

    def tail(self, node: RabbitNode) -> str:
        with contextlib.suppress(OSError):
            return (node.base / "server.log").read_text(errors="replace")[-3000:]
        return ""

    def start(self) -> None:
        """Start the three nodes and join the second and third to the first."""
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._wait_serving(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        for node in self.nodes[1:]:
            deadline = time.monotonic() + 60
            while not port_open(node.port):
                assert time.monotonic() < deadline, f"{node.name} did not come back after joining"
                time.sleep(0.2)

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL the node's whole process group: the node crashes, as a lost machine would."""
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=30)
        node.process = None
        deadline = time.monotonic() + 30
        while port_open(node.port):  # the Erlang VM is gone a moment after the script
            assert time.monotonic() < deadline, f"{node.name} still listens after SIGKILL"
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill every node and remove every directory (also when a test failed)."""
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.home, ignore_errors=True)

"""Start-up failures give the operator one clear line, a non-zero exit and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port_block


def run_tessera(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("tessera:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("service", ["gateway", "issuer", "revocation", "keys"])
def test_missing_amqp_url_names_the_variable(tessera_env: dict[str, str], service: str) -> None:
    env = {k: v for k, v in tessera_env.items() if k != "TESSERA_AMQP_URL"}
    assert_one_clear_line(run_tessera(env, "serve", service), "TESSERA_AMQP_URL")


def test_unreachable_database_is_one_line(tessera_env: dict[str, str]) -> None:
    port = free_port_block(1)
    env = dict(tessera_env, TESSERA_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/postgres")
    assert_one_clear_line(run_tessera(env, "serve", "issuer"), "PostgreSQL", f"127.0.0.1:{port}")


def test_malformed_port_names_the_variable(tessera_env: dict[str, str]) -> None:
    env = dict(tessera_env, TESSERA_KEYS_PORT="eighty")
    assert_one_clear_line(run_tessera(env, "serve", "keys"), "TESSERA_KEYS_PORT")


def test_dev_refuses_to_start_without_rabbitmq(tessera_env: dict[str, str]) -> None:
    port = free_port_block(1)
    env = dict(tessera_env, TESSERA_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/")
    assert_one_clear_line(run_tessera(env, "dev", "--port", "1"), "RabbitMQ")


def test_dev_refuses_to_start_without_postgresql(tessera_env: dict[str, str]) -> None:
    port = free_port_block(1)
    env = dict(tessera_env, TESSERA_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/postgres")
    assert_one_clear_line(run_tessera(env, "dev", "--port", "1"), "PostgreSQL")

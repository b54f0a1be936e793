"""Start-up failures give the operator one clear line, a non-zero exit and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, Stack, free_port_block


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


@pytest.mark.parametrize("command", [("serve", "keys"), ("dev", "--port", "1")])
def test_unknown_log_level_names_the_variable(
    tessera_env: dict[str, str], command: tuple[str, ...]
) -> None:
    env = dict(tessera_env, TESSERA_LOG_LEVEL="verbose")
    assert_one_clear_line(run_tessera(env, *command), "TESSERA_LOG_LEVEL", "verbose")


@pytest.mark.parametrize("command", [("serve", "issuer"), ("dev", "--port", "1")])
def test_non_amqp_broker_url_names_the_variable(
    tessera_env: dict[str, str], command: tuple[str, ...]
) -> None:
    env = dict(tessera_env, TESSERA_AMQP_URL="http://x")
    assert_one_clear_line(run_tessera(env, *command), "TESSERA_AMQP_URL", "amqp://")


@pytest.mark.parametrize(
    ("permission", "dialect", "says"),
    [
        ("admn", "opaque", "'admn' is not a permission"),
        ("Admin", "databricks", "'Admin' is not a permission"),
        ("WRITE", "tapis", "needs --dialect opaque"),
    ],
)
def test_token_create_refuses_a_permission_that_grants_nothing(
    tessera_env: dict[str, str], permission: str, dialect: str, says: str
) -> None:
    # Nothing listens there: the refusal must come before any call.
    env = dict(tessera_env, TESSERA_ISSUER_URL=f"http://127.0.0.1:{free_port_block(1)}")
    result = run_tessera(
        env, "token", "create", "--tenant", "dev", "--subject", "a",
        "--permission", permission, "--dialect", dialect,
    )  # fmt: skip
    assert result.returncode == 2
    assert_one_clear_line(result, says)
    assert result.stdout == ""


def test_token_create_help_tells_the_default_lifetime_and_the_lagrello_dialect(
    tessera_env: dict[str, str],
) -> None:
    result = run_tessera(tessera_env, "token", "create", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "never expires" not in text
    assert "the tenant's maximum lifetime" in text
    assert "access TTL" in text
    assert "opaque (default): the generic Tessera token (tsr_…), which is the Lagrello" in text
    for permission in ("admin", "tokens:create-any", "keys:rotate", "READ, WRITE or ADMIN"):
        assert permission in text


def test_a_closed_pipe_prints_no_traceback(stack: Stack) -> None:
    # Like `tessera … | head`: the reader is gone before the command writes.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "tenant", "list"],
            env=stack.env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode == 141

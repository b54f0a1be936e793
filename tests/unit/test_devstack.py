"""The dev stack descriptor: where it lives, how it is written, when it counts as running."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from shared.devstack import (
    DevStack,
    descriptor_path,
    process_start,
    read_descriptor,
    remove_descriptor,
    running_stack,
    service_endpoint,
    with_stack_secrets,
    write_descriptor,
)


def _stack(pid: int, **env: str) -> DevStack:
    return DevStack(
        pid=pid,
        directory="/somewhere",
        public_url="http://localhost:18080",
        services={"issuer": "https://127.0.0.1:18081", "keys": "https://127.0.0.1:18083"},
        secrets_dir="/somewhere/.tessera-dev",
        env=dict(env),
        process_start=process_start(pid),
    )


def test_the_descriptor_lives_in_the_users_state_directory() -> None:
    assert descriptor_path({"HOME": "/home/u"}) == Path(
        "/home/u/.local/state/tessera/dev-stack.json"
    )
    assert descriptor_path({"HOME": "/home/u", "XDG_STATE_HOME": "/st"}) == Path(
        "/st/tessera/dev-stack.json"
    )
    # A relative XDG_STATE_HOME is invalid by the spec: ignored.
    assert descriptor_path({"HOME": "/home/u", "XDG_STATE_HOME": "rel"}) == Path(
        "/home/u/.local/state/tessera/dev-stack.json"
    )
    assert descriptor_path({"TESSERA_DEV_STACK_FILE": "/x/s.json"}) == Path("/x/s.json")


def test_it_is_written_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tessera" / "dev-stack.json"
    write_descriptor(path, _stack(os.getpid()))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_descriptor(path) == _stack(os.getpid())
    assert [p.name for p in path.parent.iterdir()] == ["dev-stack.json"]  # no temporary left


def test_a_descriptor_whose_process_is_gone_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    env = {"TESSERA_DEV_STACK_FILE": str(tmp_path / "dev-stack.json")}
    write_descriptor(tmp_path / "dev-stack.json", _stack(int(dead.stdout)))
    assert running_stack(env) is None
    assert service_endpoint(env, "issuer").url == "https://127.0.0.1:8081"
    write_descriptor(tmp_path / "dev-stack.json", _stack(os.getpid()))
    assert running_stack(env) is not None
    assert service_endpoint(env, "issuer").url == "https://127.0.0.1:18081"


def test_a_reused_pid_is_not_taken_for_the_stack(tmp_path: Path) -> None:
    env = {"TESSERA_DEV_STACK_FILE": str(tmp_path / "dev-stack.json")}
    stack = _stack(os.getpid())
    write_descriptor(
        tmp_path / "dev-stack.json", DevStack(**{**stack.to_json(), "process_start": "1"})
    )
    assert running_stack(env) is None


def test_a_set_variable_wins_over_the_stack(tmp_path: Path) -> None:
    env = {
        "TESSERA_DEV_STACK_FILE": str(tmp_path / "dev-stack.json"),
        "TESSERA_ISSUER_URL": "https://issuer.example:9000",
    }
    write_descriptor(tmp_path / "dev-stack.json", _stack(os.getpid()))
    endpoint = service_endpoint(env, "issuer")
    assert endpoint.url == "https://issuer.example:9000"
    assert "TESSERA_ISSUER_URL" in endpoint.source


def test_secrets_and_database_come_from_one_place(tmp_path: Path) -> None:
    path = tmp_path / "dev-stack.json"
    write_descriptor(
        path,
        _stack(
            os.getpid(),
            TESSERA_KEK_FILE="/somewhere/.tessera-dev/tessera_kek",
            TESSERA_KEYS_DATABASE_URL="postgresql://pg/dev_keys",
        ),
    )
    base = {"TESSERA_DEV_STACK_FILE": str(path), "TESSERA_KEK_PREVIOUS": "p" * 32}
    merged, stack = with_stack_secrets(base)
    assert stack is not None
    assert merged["TESSERA_KEK_FILE"] == "/somewhere/.tessera-dev/tessera_kek"
    assert merged["TESSERA_KEYS_DATABASE_URL"] == "postgresql://pg/dev_keys"
    assert "TESSERA_KEK_PREVIOUS" not in merged  # never one stack's KEK with another's
    # A KEK of the operator's own: the environment alone, the stack is not consulted.
    merged, stack = with_stack_secrets({**base, "TESSERA_KEK": "k" * 32})
    assert stack is None and "TESSERA_KEYS_DATABASE_URL" not in merged


def test_only_the_owner_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "dev-stack.json"
    write_descriptor(path, _stack(os.getpid()))
    remove_descriptor(path, os.getpid() + 1)
    assert path.exists()
    remove_descriptor(path, os.getpid())
    assert not path.exists()

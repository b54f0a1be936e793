"""`tessera dev`: every service ready quickly, request ids cross services, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_dev_serves_every_service_and_sigterm_leaves_no_child(
    tessera_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    stack = start_stack(tessera_env, tmp_path / "dev.log", timeout=15)
    try:
        for name, url in stack.urls.items():
            status, body = _get(f"{url}/readyz")
            assert status == 200, (name, body)
        assert time.monotonic() - started < 15
        children = _children(stack.process.pid)
        assert len(children) == 4
    finally:
        stack.process.send_signal(signal.SIGTERM)
        stack.process.wait(timeout=30)
    assert stack.process.returncode == 0
    assert not [pid for pid in children if _alive(pid)]
    stop_stack(stack)


def test_request_id_appears_in_gateway_and_backend_logs(stack: Stack) -> None:
    request_id = f"trace-{os.getpid()}-{time.time_ns()}"
    status, body = _get(f"{stack.gateway}/internal/status", {"X-Request-ID": request_id})
    assert status == 200
    assert json.loads(body)["backends"] == {"issuer": "ok", "keys": "ok", "revocation": "ok"}

    def services_logging_it() -> set[str]:
        seen = set()
        for line in stack.logs().splitlines():
            if line.startswith("{") and request_id in line:
                record = json.loads(line)
                if record.get("request_id") == request_id:
                    seen.add(record["service"])
        return seen

    deadline = time.monotonic() + 10
    while services_logging_it() != {"gateway", "issuer", "keys", "revocation"}:
        assert time.monotonic() < deadline, services_logging_it()
        time.sleep(0.05)

"""The documents a new user follows: links that resolve inside the repository, the facts a
client user needs in the README, and a subscriber example that runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Stack
from tests.e2e.gateway_support import mint

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        resolved = (document.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{document.name} links outside: {target}"
        assert resolved.exists(), f"{document.name} links to a missing {target}"


def test_readme_links_the_architecture_page_and_tells_client_users_what_they_need() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "(docs/architecture.md)" in readme
    assert "/v3/tenants/<tenant>/.well-known/jwks.json" in readme
    assert 'Tapis(base_url="http://localhost:8080", tenant_id="dev", jwt=token)' in readme
    assert "use_basic_auth=False" in readme
    # The two set-up commands are still there.
    assert "tessera dev --port 8080" in readme and "bash .ci/run" in readme


def _python_blocks(document: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", document.read_text(), re.S)


@pytest.mark.e2e
def test_the_subscriber_example_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(_python_blocks(ROOT / "docs" / "subscriber.md")[0])
    token = mint(stack, "doc-reader", dialect="tapis")
    result = subprocess.run(
        [sys.executable, str(example), token],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "valid token of doc-reader@dev" in result.stdout
    assert "revoked? False" in result.stdout

"""What a non-editable install (the Docker image's) ships besides Python modules."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_data_file_in_the_packages_is_package_data() -> None:
    # The code reads these files from its own package (migrations, event schemas, the gateway's
    # openapi.json): one left out of the wheel is missing only once installed, never in an
    # editable checkout.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["*"]
    data_files = [
        path
        for top in ("shared", "services")
        for path in (ROOT / top).rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert ROOT / "services" / "gateway" / "openapi.json" in data_files
    for path in data_files:
        assert any(fnmatch(path.name, pattern) for pattern in patterns), path.relative_to(ROOT)

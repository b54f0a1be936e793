"""The OpenAPI 3.1 document of every route the gateway serves, in each dialect's own shapes.

The document is the data file ``openapi.json`` beside this module, shipped as package data
(``[tool.setuptools.package-data]`` in pyproject.toml). Nothing in it depends on the
deployment, so it is served as it is read.

What the error statuses every operation lists stand for: 413, a body over
``TESSERA_MAX_BODY_BYTES`` (Tapis answers it 400); 429, a rate limit, the pre-authentication
limit per client address included; 503, a dependency down, or too many open connections.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

DOCUMENT = "openapi.json"


@cache
def openapi() -> dict[str, Any]:
    """The document served at /openapi.json, read from the package once."""
    document: dict[str, Any] = json.loads(
        files("services.gateway").joinpath(DOCUMENT).read_text(encoding="utf-8")
    )
    return document

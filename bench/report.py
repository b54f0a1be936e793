"""How a benchmark hands its figures to ``python -m bench``: one ``RESULT`` JSON line each."""

from __future__ import annotations

import json

PREFIX = "RESULT "


def result(figure: str, value: float, unit: str, primitive: str | None = None) -> None:
    """Print a figure for the runner's table; ``primitive`` names a figure of bench.primitives
    (e.g. ``pyjwt_rs256_sign``) that the runner measures in the same run and divides by."""
    print(
        PREFIX
        + json.dumps({"figure": figure, "value": value, "unit": unit, "primitive": primitive})
    )

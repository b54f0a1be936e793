"""What presenting a refresh token does, decided from its row alone (issuer domain)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.issuer.domain import MAX_GRACE_RETRIES, RefreshStep, refresh_step

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GRACE = 10


def _row(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "revoked_at": None,
        "expires_at": NOW + timedelta(hours=1),
        "used_at": None,
        "retries": 0,
    }
    row.update(fields)
    return row


@pytest.mark.parametrize(
    ("row", "step"),
    [
        (None, RefreshStep.INVALID),
        (_row(revoked_at=NOW - timedelta(seconds=1)), RefreshStep.INVALID),
        (_row(expires_at=NOW), RefreshStep.INVALID),
        (_row(), RefreshStep.ROTATE),
        (_row(used_at=NOW - timedelta(seconds=GRACE)), RefreshStep.RETRY),
        (_row(used_at=NOW, retries=MAX_GRACE_RETRIES - 1), RefreshStep.RETRY),
        (_row(used_at=NOW, retries=MAX_GRACE_RETRIES), RefreshStep.REUSE),
        (_row(used_at=NOW - timedelta(seconds=GRACE + 1)), RefreshStep.REUSE),
        # Used by a racer whose clock read came after ours: still a retry, not theft.
        (_row(used_at=NOW + timedelta(milliseconds=5)), RefreshStep.RETRY),
    ],
)
def test_refresh_step(row: dict[str, object] | None, step: RefreshStep) -> None:
    assert refresh_step(row, NOW, GRACE) is step

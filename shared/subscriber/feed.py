"""Reading the revocation service's replay feed and snapshot over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from shared.logging import ROUTINE_HEADER


class FeedUnavailable(ConnectionError):
    """The feed or snapshot could not be read (unreachable, or an unexpected answer)."""


@dataclass(frozen=True)
class FeedPage:
    """One feed page: its revocations, the ``since`` to ask for next, the newest seq the service
    has, and the seq through which old revocations were pruned (0: none)."""

    revocations: list[dict[str, Any]]
    next_since: int
    current_seq: int
    pruned_through: int


class FeedClient:
    """``GET <url>?since=`` (the feed) and ``GET <url>/snapshot`` (pages of a consistent set)."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, headers: Mapping[str, str]
    ) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._headers = dict(headers)

    async def _get(
        self,
        url: str,
        params: dict[str, str],
        items: str = "revocations",
        *,
        routine: bool = False,
    ) -> dict[str, Any]:
        headers = {**self._headers, ROUTINE_HEADER: "poll"} if routine else self._headers
        try:
            async with self._session.get(url, params=params, headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise FeedUnavailable(f"{url} answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FeedUnavailable(f"{url} unreachable: {type(exc).__name__}") from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise FeedUnavailable(f"{url} answered something other than JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get(items), list):
            raise FeedUnavailable(f"{url} answered an unexpected body")
        return body

    async def since(self, seq: int, limit: int, *, routine: bool = False) -> FeedPage:
        """One feed page: revocations after ``seq`` in seq order. ``routine``: a poll made on a
        timer, which the service logs at debug only."""
        body = await self._get(self._url, {"since": str(seq), "limit": str(limit)}, routine=routine)
        try:
            return FeedPage(
                body["revocations"],
                int(body["next_since"]),
                int(body["current_seq"]),
                int(body.get("pruned_through", 0)),
            )
        except (KeyError, TypeError, ValueError):
            raise FeedUnavailable("feed page without next_since/current_seq") from None

    async def snapshot(self, limit: int) -> AsyncIterator[tuple[int, list[list[Any]]]]:
        """Pages of (as_of, entries) of one consistent snapshot, all with the same as_of.

        Entries are compact rows ``[seq, token_id, jti, display_id, expires_at_epoch]``. The
        next page is requested before the current one is handed out, so the service renders
        it while the caller applies this one.
        """
        url = f"{self._url}/snapshot"
        params = {"limit": str(limit), "format": "compact"}
        body = await self._get(url, params, "entries")
        while True:
            try:
                as_of = int(body["as_of"])
                after = body["next_after_seq"]
                following = None
                if after is not None:
                    params = {**params, "as_of": str(as_of), "after_seq": str(int(after))}
                    following = asyncio.create_task(self._get(url, params, "entries"))
            except (KeyError, TypeError, ValueError):
                raise FeedUnavailable("snapshot page without as_of") from None
            try:
                yield as_of, body["entries"]
            except BaseException:
                if following is not None:
                    following.cancel()
                raise
            if following is None:
                return
            body = await following

"""Reading the revocation service's replay feed and snapshot over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp


class FeedUnavailable(ConnectionError):
    """The feed or snapshot could not be read (unreachable, or an unexpected answer)."""


@dataclass(frozen=True)
class FeedPage:
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

    async def _get(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            async with self._session.get(url, params=params, headers=self._headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise FeedUnavailable(f"{url} answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FeedUnavailable(f"{url} unreachable: {type(exc).__name__}") from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise FeedUnavailable(f"{url} answered something other than JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("revocations"), list):
            raise FeedUnavailable(f"{url} answered an unexpected body")
        return body

    async def since(self, seq: int, limit: int) -> FeedPage:
        """One feed page: revocations after ``seq`` in seq order."""
        body = await self._get(self._url, {"since": str(seq), "limit": str(limit)})
        try:
            return FeedPage(
                body["revocations"],
                int(body["next_since"]),
                int(body["current_seq"]),
                int(body.get("pruned_through", 0)),
            )
        except (KeyError, TypeError, ValueError):
            raise FeedUnavailable("feed page without next_since/current_seq") from None

    async def snapshot(self, limit: int) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
        """Pages of (as_of, revocations) of one consistent snapshot, all with the same as_of."""
        params = {"limit": str(limit)}
        while True:
            body = await self._get(f"{self._url}/snapshot", params)
            try:
                as_of = int(body["as_of"])
                after = body["next_after_seq"]
            except (KeyError, TypeError, ValueError):
                raise FeedUnavailable("snapshot page without as_of") from None
            yield as_of, body["revocations"]
            if after is None:
                return
            params = {"limit": str(limit), "as_of": str(as_of), "after_seq": str(int(after))}

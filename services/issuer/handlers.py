"""HTTP handlers of the issuer: parse the request, call the issuing code or the store, reply."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import ClientSession, web

from services.issuer import issuing, store
from services.issuer.domain import (
    KINDS,
    RECORD_FIELDS,
    CreateJwt,
    CreateOpaque,
    decode_cursor,
    encode_cursor,
    is_active,
    record_fields,
    record_json,
)
from services.issuer.errors import UnknownToken
from services.issuer.events import revoked_mark
from services.issuer.settings import Settings
from services.issuer.tenants import KeysClient
from services.issuer.writer import TokenWriter
from shared.errors import BadRequest
from shared.http import json_response, read_json_object
from shared.service import POOL

routes = web.RouteTableDef()
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
KEYS: web.AppKey[KeysClient] = web.AppKey("keys_client", KeysClient)
SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)
WRITER: web.AppKey[TokenWriter] = web.AppKey("token_writer", TokenWriter)


@routes.post("/internal/tokens")
async def create_token(request: web.Request) -> web.Response:
    parsed = CreateOpaque.parse(await read_json_object(request))
    record, value = await issuing.create_opaque(
        request.app[WRITER], request.app[KEYS], request.app[SETTINGS].pepper, parsed
    )
    return json_response({"token": record, "value": value})


@routes.post("/internal/authenticate")
async def authenticate(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    token = body.get("token")
    if not isinstance(token, str) or len(token) > 4096:
        raise BadRequest("token must be a string")
    principal = await issuing.authenticate(request.app[POOL], request.app[SETTINGS].pepper, token)
    return json_response(principal)


@routes.post("/internal/jwt")
async def create_jwt(request: web.Request) -> web.Response:
    parsed = CreateJwt.parse(await read_json_object(request))
    result = await issuing.issue_jwt(
        request.app[WRITER], request.app[KEYS], request.app[SETTINGS].pepper, parsed
    )
    return json_response(result)


@routes.post("/internal/jwt/refresh")
async def refresh_jwt(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    token = body.get("refresh_token")
    if not isinstance(token, str) or len(token) > 16384:
        raise BadRequest("refresh_token must be a string")
    settings = request.app[SETTINGS]
    result = await issuing.refresh(
        request.app[POOL],
        request.app[WRITER],
        request.app[KEYS],
        settings.pepper,
        token,
        grace_seconds=settings.refresh_grace_seconds,
    )
    return json_response(result)


def _tenant(request: web.Request) -> str:
    tenant = request.query.get("tenant", "")
    if not tenant:
        raise BadRequest("tenant is required")
    return tenant


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


@routes.get("/internal/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    kinds = request.query.get("kind", ",".join(KINDS)).split(",")
    if not set(kinds) <= set(KINDS):
        raise BadRequest(f"kind must be among {', '.join(KINDS)}")
    limit = _int(request, "limit", 20, 1, 1000)
    offset = _int(request, "offset", 0, 0, 10_000_000)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    async with request.app[POOL].acquire() as conn:
        rows = await store.fetch_page(
            conn,
            tenant=tenant,
            subject=request.query.get("subject"),
            kinds=kinds,
            include_inactive=request.query.get("include_inactive") in ("1", "true"),
            after=after,
            offset=offset,
            limit=limit + 1,
        )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return json_response({"tokens": [record_json(r) for r in page], "next_cursor": next_cursor})


MAX_LISTS = 100


@routes.post("/internal/tokens/lists")
async def owner_lists(request: web.Request) -> web.Response:
    """Several owners' active tokens at once: the gateway coalesces concurrent list calls."""
    body = await read_json_object(request)
    lists = body.get("lists")
    if not isinstance(lists, list) or not 1 <= len(lists) <= MAX_LISTS:
        raise BadRequest(f"lists must hold 1 to {MAX_LISTS} queries")
    queries = []
    for query in lists:
        if not isinstance(query, dict):
            raise BadRequest("each query must be an object")
        tenant, subject, kinds, limit = (
            query.get("tenant"),
            query.get("subject"),
            query.get("kinds"),
            query.get("limit", 20),
        )
        if not isinstance(tenant, str) or not tenant or not isinstance(subject, str):
            raise BadRequest("each query needs a tenant and a subject")
        if not isinstance(kinds, list) or not kinds or not set(kinds) <= set(KINDS):
            raise BadRequest(f"kinds must be a list among {', '.join(KINDS)}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise BadRequest("limit must be an integer from 1 to 1000")
        queries.append((tenant, subject, kinds, limit))
    fields = body.get("fields")
    if fields is not None and (
        not isinstance(fields, list) or not fields or not set(fields) <= RECORD_FIELDS
    ):
        raise BadRequest(f"fields must be a list among {', '.join(sorted(RECORD_FIELDS))}")
    async with request.app[POOL].acquire() as conn:
        found = await store.fetch_owner_lists(conn, queries)
    results = [
        {"tokens": [record_fields(r, fields) if fields else record_json(r) for r in rows]}
        for rows in found
    ]
    return json_response({"results": results})


@routes.post("/internal/tokens/revoked")
async def mark_revoked(request: web.Request) -> web.Response:
    """Count tokens revoked now, not only once their ``token.revoked`` events arrive: the
    gateway calls this after each revocation, so its next lookup, list or quota check (here,
    a few milliseconds later) already sees it."""
    revocations = (await read_json_object(request)).get("revocations")
    if not isinstance(revocations, list) or not all(
        isinstance(r, dict) and isinstance(r.get("tenant"), str) for r in revocations
    ):
        raise BadRequest("revocations must be a list of Revocation objects")
    now = datetime.now(UTC)
    marks = [m for r in revocations if (m := revoked_mark(r["tenant"], r, now)) is not None]
    if not marks:
        return json_response({"marked": 0})
    async with request.app[POOL].acquire() as conn:
        return json_response({"marked": await store.mark_revoked(conn, marks)})


@routes.get("/internal/tokens/lookup")
async def lookup(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    query = request.query
    async with request.app[POOL].acquire() as conn:
        if "id" in query:
            try:
                row = await store.fetch_one(conn, tenant, "id", uuid.UUID(query["id"]))
            except ValueError:
                row = None
        elif "display_id" in query:
            row = await store.fetch_one(conn, tenant, "display_id", query["display_id"])
        elif "value" in query:
            hashes = request.app[SETTINGS].pepper.candidate_hashes(query["value"])
            row = await store.fetch_by_hash(conn, hashes, KINDS)
            row = row if row is not None and row["tenant"] == tenant else None
        else:
            raise BadRequest("give one of id, display_id or value")
    if row is None:
        raise UnknownToken("no such token")
    return json_response(record_json(row))


@routes.get("/internal/tokens/active")
async def active(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    query = request.query
    selectors = [name for name in ("subject", "family_id", "kid") if name in query]
    if len(selectors) != 1:
        raise BadRequest("give exactly one of subject, family_id or kid")
    column = selectors[0]
    value: object = query[column]
    if column == "family_id":
        try:
            value = uuid.UUID(query[column])
        except ValueError:
            return json_response({"tokens": []})
    now = datetime.now(UTC)
    async with request.app[POOL].acquire() as conn:
        rows = await store.fetch_active_by(conn, tenant, column, value)
    return json_response({"tokens": [record_json(r) for r in rows if is_active(r, now)]})

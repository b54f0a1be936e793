"""The gateway's OpenAPI document: a data file in the package, served as it is."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.gateway.app import create_app
from services.gateway.openapi import openapi
from services.gateway.settings import Settings
from shared.pki import init_pki


def _gateway(tmp_path: Path) -> web.Application:
    # create_app connects nothing: no broker or service is reached by building it.
    init_pki(tmp_path)
    env = {"TESSERA_AMQP_URL": "amqp://127.0.0.1:9/", "TESSERA_TLS_DIR": str(tmp_path)}
    return create_app(Settings.from_env(env))


def _data_file() -> str:
    return files("services.gateway").joinpath("openapi.json").read_text(encoding="utf-8")


async def test_openapi_json_serves_the_data_file_unchanged(tmp_path: Path) -> None:
    app = _gateway(tmp_path)
    request = make_mocked_request("GET", "/openapi.json", app=app)
    match = await app.router.resolve(request)
    response = await match.handler(request)
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    # The same document, keys in the file's order, as compact JSON.
    expected = json.dumps(json.loads(_data_file()), separators=(",", ":")).encode()
    assert response.body == expected


def test_openapi_document_is_3_1_and_names_every_dialect() -> None:
    document = openapi()
    assert document["openapi"] == "3.1.0"
    paths = set(document["paths"])
    for path in (
        "/v3/tokens",
        "/v3/tokens/revoke",
        "/v3/tokens/keys",
        "/v1/api_access_token",
        "/v1/tokens",
        "/v1/tokens/{id}",
        "/api/2.0/token/create",
        "/api/2.0/token/list",
        "/api/2.0/token/delete",
        "/.well-known/databricks-config",
        "/oauth2/introspect",
        "/oauth2/revoke",
        "/v1/revocations",
        "/v1/revocations/snapshot",
    ):
        assert path in paths


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value))
    return set()


def test_every_ref_resolves_inside_the_document() -> None:
    document = openapi()
    refs = _refs(document)
    assert refs, "the document uses $ref"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"], ref


def _template(path: str) -> str:
    # aiohttp names a placeholder for its handler ({key}), the document for its clients ({id}).
    return re.sub(r"\{[^}]*\}", "{}", path)


def _routes(app: web.Application) -> set[tuple[str, str]]:
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()}
    # add_get answers HEAD too; such a HEAD is described by its GET.
    return {
        (method, _template(path))
        for method, path in routes
        if method != "HEAD" or ("GET", path) not in routes
    }


def test_document_describes_exactly_the_routes_the_gateway_serves(tmp_path: Path) -> None:
    described = {
        (method.upper(), _template(path))
        for path, operations in openapi()["paths"].items()
        for method in operations
    }
    # The public API app serves nothing else: probes, metrics and /internal/status are on the
    # ops listener (shared.http.ops_app), so every route is one a client may call.
    served = _routes(_gateway(tmp_path))
    assert served - described == set(), "routes the document does not describe"
    assert described - served == set(), "described operations the gateway does not serve"

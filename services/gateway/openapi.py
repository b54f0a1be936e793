"""The OpenAPI 3.1 document of every route the gateway serves, in each dialect's own shapes."""

from __future__ import annotations

from functools import cache
from typing import Any

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description or "JSON", "content": {JSON: {"schema": schema}}}


def _errors(schema: str, *statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref(schema), "error") for s in statuses}


STR = {"type": "string"}
NULLABLE_STR = {"type": ["string", "null"]}
# 413: a body over TESSERA_MAX_BODY_BYTES (Tapis answers it 400); 429: rate limits, the
# pre-authentication limit per address included; 503: a dependency down, or too many connections.
TAPIS_ERRORS = _errors("TapisError", 400, 405, 429, 500, 503)
JM_ERRORS = _errors("Detail", 400, 403, 404, 405, 413, 500, 503)
LAGRELLO_ERRORS = _errors("LagrelloError", 400, 403, 404, 405, 413, 429, 500, 503)
DB_ERRORS = _errors("DatabricksError", 400, 401, 403, 404, 405, 413, 429, 500, 503)
TESSERA_ERRORS = _errors("TesseraError", 400, 401, 403, 404, 405, 413, 429, 500, 503)


def _tapis_ok(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "200": _json(
            {
                "type": "object",
                "required": ["result", "status", "message", "version", "metadata"],
                "properties": {
                    "result": result,
                    "status": {"const": "success"},
                    "message": STR,
                    "version": STR,
                    "metadata": {"type": "object"},
                },
            }
        ),
        **TAPIS_ERRORS,
    }


def _token_part(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [name, "jti", "expires_in", "expires_at"],
        "properties": {
            name: STR,
            "jti": STR,
            "expires_in": {"type": "integer"},
            "expires_at": STR,
        },
    }


SCHEMAS: dict[str, Any] = {
    "TapisError": {
        "type": "object",
        "required": ["result", "status", "message", "version", "metadata"],
        "properties": {
            "result": {"type": "null"},
            "status": {"const": "error"},
            "message": STR,
            "version": STR,
            "metadata": {"type": "object"},
        },
    },
    "NewTokenRequest": {
        "type": "object",
        "required": ["account_type", "token_tenant_id", "token_username"],
        "properties": {
            "account_type": {"enum": ["user", "service"]},
            "token_tenant_id": STR,
            "token_username": STR,
            "target_site": STR,
            "delegation_token": {"type": "boolean"},
            "delegation_sub_tenant_id": STR,
            "delegation_sub_username": STR,
            "access_token_ttl": {"type": "integer"},
            "generate_refresh_token": {"type": "boolean"},
            "refresh_token_ttl": {"type": "integer"},
            "claims": {"type": "object"},
        },
    },
    "NewTokenResponse": {
        "type": "object",
        "required": ["access_token"],
        "properties": {
            "access_token": _token_part("access_token"),
            "refresh_token": _token_part("refresh_token"),
        },
    },
    "Detail": {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {
                "oneOf": [
                    STR,
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["loc", "msg", "type"],
                            "properties": {
                                "loc": {"type": "array", "items": STR},
                                "msg": STR,
                                "type": STR,
                            },
                        },
                    },
                ]
            }
        },
    },
    "ApiAccessToken": {
        "type": "object",
        "required": ["token", "identity", "expires_at"],
        "properties": {"token": STR, "identity": STR, "expires_at": NULLABLE_STR},
    },
    "LagrelloToken": {
        "type": "object",
        "required": ["tokenKey", "tokenName", "createdBy", "createdAt", "permissions"],
        "additionalProperties": False,
        "properties": {
            "tokenKey": STR,
            "tokenName": STR,
            "createdBy": STR,
            "createdAt": {"type": "string", "format": "date-time"},
            "permissions": {"type": "array", "items": {"enum": ["READ", "WRITE", "ADMIN"]}},
        },
    },
    "LagrelloTokenList": {
        "type": "object",
        "required": ["data", "paging"],
        "additionalProperties": False,
        "properties": {
            "data": {"type": "array", "items": _ref("LagrelloToken")},
            "paging": {
                "type": "object",
                "required": ["previous", "next"],
                "additionalProperties": False,
                "properties": {"previous": STR, "next": STR},
            },
        },
    },
    "LagrelloError": {
        "type": "object",
        "required": ["message", "errorType"],
        "properties": {"message": STR, "errorType": STR},
    },
    "PublicTokenInfo": {
        "type": "object",
        "required": ["token_id", "creation_time", "expiry_time"],
        "properties": {
            "token_id": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "creation_time": {"type": "integer"},
            "expiry_time": {"type": "integer"},
            "comment": STR,
        },
    },
    "DatabricksError": {
        "type": "object",
        "required": ["error_code", "message"],
        "not": {"required": ["detail"]},
        "properties": {"error_code": STR, "message": STR},
    },
    "TesseraError": {
        "type": "object",
        "properties": {"error": STR, "message": STR, "detail": STR},
    },
    "Revocation": {"type": "object"},
}


def _bearer_security() -> list[dict[str, list[str]]]:
    return [{"bearer": []}]


def _paths() -> dict[str, Any]:
    lagrello_tokens = {
        "post": {
            "operationId": "lagrello_create",
            "security": _bearer_security(),
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["tokenName"],
                            "properties": {
                                "tokenName": STR,
                                "permissions": {
                                    "type": "array",
                                    "items": {"enum": ["READ", "WRITE", "ADMIN"]},
                                },
                            },
                        }
                    }
                },
            },
            "responses": {"200": _json(_ref("LagrelloToken")), **LAGRELLO_ERRORS},
        },
        "get": {
            "operationId": "lagrello_list",
            "security": _bearer_security(),
            "parameters": [
                {
                    "name": "size",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            ],
            "responses": {"200": _json(_ref("LagrelloTokenList")), **LAGRELLO_ERRORS},
        },
    }
    return {
        "/v3/tokens": {
            "post": {
                "operationId": "create_token",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("NewTokenRequest")}},
                },
                "responses": _tapis_ok(_ref("NewTokenResponse")),
            },
            "put": {
                "operationId": "refresh_token",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["refresh_token"],
                                "properties": {"refresh_token": STR},
                            }
                        }
                    },
                },
                "responses": _tapis_ok(_ref("NewTokenResponse")),
            },
        },
        "/v3/tokens/revoke": {
            "post": {
                "operationId": "revoke_token",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {"token": STR},
                            }
                        }
                    },
                },
                "responses": _tapis_ok({"const": ""}),
            }
        },
        "/v3/tokens/keys": {
            "put": {
                "operationId": "update_keys",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["tenant_id"],
                                "properties": {"tenant_id": STR},
                            }
                        }
                    },
                },
                "responses": _tapis_ok(
                    {
                        "type": "object",
                        "required": ["public_key"],
                        "properties": {"public_key": STR},
                    }
                ),
            }
        },
        "/v3/tenants/{tenant}/.well-known/jwks.json": {
            "get": {
                "operationId": "tenant_jwks",
                "parameters": [{"name": "tenant", "in": "path", "required": True, "schema": STR}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["keys"],
                            "properties": {"keys": {"type": "array"}},
                        }
                    ),
                    **TAPIS_ERRORS,
                },
            }
        },
        "/v1/api_access_token": {
            "post": {
                "operationId": "create_api_access_token",
                "parameters": [
                    {"name": "identity", "in": "query", "schema": STR},
                    {"name": "expiration", "in": "query", "schema": STR},
                ],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "identity": STR,
                                    "expiration": {"oneOf": [{"type": "integer"}, STR]},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("ApiAccessToken")), **JM_ERRORS},
            },
            "delete": {
                "operationId": "revoke_api_access_token",
                "parameters": [
                    {"name": "identity", "in": "query", "required": True, "schema": STR},
                    {"name": "token", "in": "query", "required": True, "schema": STR},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token", "identity"],
                            "properties": {"token": STR, "identity": STR},
                        }
                    ),
                    "422": _json(_ref("Detail")),
                    **JM_ERRORS,
                },
            },
        },
        "/v1/tokens": lagrello_tokens,
        "/v1/tokens/{id}": {
            "delete": {
                "operationId": "lagrello_delete",
                "security": _bearer_security(),
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": STR}],
                "responses": {"204": {"description": "deleted, no body"}, **LAGRELLO_ERRORS},
            }
        },
        "/api/2.0/token/create": {
            "post": {
                "operationId": "databricks_create",
                "security": _bearer_security(),
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "comment": STR,
                                    "lifetime_seconds": {"type": "integer"},
                                    "scopes": {"type": "array", "items": STR},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token_value", "token_info"],
                            "properties": {
                                "token_value": {"type": "string", "pattern": "^dapi[0-9a-f]{32}$"},
                                "token_info": _ref("PublicTokenInfo"),
                            },
                        }
                    ),
                    **DB_ERRORS,
                },
            }
        },
        "/api/2.0/token/list": {
            "get": {
                "operationId": "databricks_list",
                "security": _bearer_security(),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token_infos"],
                            "properties": {
                                "token_infos": {"type": "array", "items": _ref("PublicTokenInfo")}
                            },
                        }
                    ),
                    **DB_ERRORS,
                },
            }
        },
        "/api/2.0/token/delete": {
            "post": {
                "operationId": "databricks_delete",
                "security": _bearer_security(),
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["token_id"],
                                "properties": {"token_id": STR},
                            }
                        }
                    },
                },
                "responses": {"200": _json({"type": "object", "maxProperties": 0}), **DB_ERRORS},
            }
        },
        "/.well-known/databricks-config": {
            "get": {
                "operationId": "databricks_config",
                "responses": {
                    "404": _json(_ref("DatabricksError")),
                    "200": _json({"type": "object"}),
                },
            }
        },
        "/oauth2/introspect": {
            "post": {
                "operationId": "introspect",
                "security": _bearer_security(),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {"token": STR},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["active"],
                            "properties": {"active": {"type": "boolean"}},
                        }
                    ),
                    **TESSERA_ERRORS,
                },
            }
        },
        "/oauth2/revoke": {
            "post": {
                "operationId": "oauth_revoke",
                "security": _bearer_security(),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {"token": STR},
                            }
                        }
                    },
                },
                "responses": {"200": _json({"type": "object"}), **TESSERA_ERRORS},
            }
        },
        "/v1/revocations": {
            "get": {
                "operationId": "revocation_feed",
                "security": _bearer_security(),
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {"200": _json({"type": "object"}), **TESSERA_ERRORS},
            }
        },
        "/v1/revocations/snapshot": {
            "get": {
                "operationId": "revocation_snapshot",
                "security": _bearer_security(),
                "responses": {"200": _json({"type": "object"}), **TESSERA_ERRORS},
            }
        },
        "/openapi.json": {
            "get": {"operationId": "openapi", "responses": {"200": _json({"type": "object"})}}
        },
    }


@cache
def openapi() -> dict[str, Any]:
    """The document served at /openapi.json."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tessera gateway",
            "version": "1",
            "description": "Tapis v3 Tokens, jobmanager API access tokens, Lagrello Tokens and the "
            "Databricks Token API 2.0, plus resource-server endpoints (JWKS, RFC 7662, RFC 7009, "
            "the revocation feed).",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "tapisToken": {"type": "apiKey", "in": "header", "name": "X-Tapis-Token"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }

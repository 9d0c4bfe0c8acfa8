"""OpenAPI 3.1 documents built from the routes, their pydantic models and the policy table."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

if TYPE_CHECKING:
    from shared.web.http import Function

REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details with a stable machine-readable code.",
    "required": ["type", "title", "status", "code", "requestId"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "requestId": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}

SECURITY_SCHEMES = {
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "__session"},
    "bearerIdToken": {"type": "http", "scheme": "bearer", "bearerFormat": "Firebase ID token"},
}

_STATUS_TEXT = {
    400: "Invalid input",
    401: "Not signed in, or the sign-in is no longer valid",
    403: "The caller's role, approval, origin or CSRF token does not allow this",
    404: "Not found (or not the caller's)",
    409: "Conflicts with the current state",
    413: "Body too large",
    415: "Body is not JSON",
    503: "A dependency is unavailable; nothing was changed",
}


def openapi_path(function: str, path: str) -> str:
    converted = _PARAM.sub(r"{\1}", path)
    return f"/{function}" + ("" if converted == "/" else converted)


def _schemas(fn: Function) -> tuple[dict[Any, Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    for route in fn.routes.values():
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.response is not None:
            wanted.append((route.response, "serialization"))
    if not wanted:
        return {}, {}
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    return refs, top.get("$defs", {})


def document(fn: Function) -> dict[str, Any]:
    refs, schemas = _schemas(fn)
    schemas = {**schemas, "Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in fn.routes.values():
        op: dict[str, Any] = {
            "operationId": f"{fn.name}.{route.handler.__name__}",
            "summary": route.summary,
            "x-roles": sorted(r.value for r in route.rule.roles) or ["public"],
        }
        if route.rule.owner:
            op["x-owner-fields"] = list(route.rule.owner.fields)
        if not route.rule.public:
            op["security"] = [{"sessionCookie": []}, {"bearerIdToken": []}]
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        if route.query is not None:
            qschema = route.query.model_json_schema(ref_template=REF)
            required = set(qschema.get("required", []))
            params += [
                {"name": name, "in": "query", "required": name in required, "schema": prop}
                for name, prop in qschema.get("properties", {}).items()
            ]
        params += [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
            for name in route.headers
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if route.response is not None:
            ok["content"] = {
                "application/json": {"schema": refs[(route.response, "serialization")]}
            }
        elif route.path == "/openapi.json":
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        responses: dict[str, Any] = {str(route.status): ok}
        codes = set(route.problems) | {400, 503}
        if not route.rule.public:
            codes |= {401, 403}
        if route.rule.owner or "<" in route.path:
            codes.add(404)
        if route.body is not None:
            codes |= {413, 415}
        for code in sorted(codes):
            responses[str(code)] = {
                "description": _STATUS_TEXT.get(code, "Error"),
                "content": {
                    "application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}
                },
            }
        op["responses"] = responses
        paths.setdefault(openapi_path(fn.name, route.path), {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": fn.title, "version": "1.0.0", "description": fn.description},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }

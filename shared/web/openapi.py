"""OpenAPI 3.1 documents built from the routes, their pydantic models and the policy table.

Component names are the models' own (`Status`, `Problem`), unique within one function's document,
which is complete on its own. Two functions may each have a `Status`: the gateway's merged
document renames each function's components (dev/gateway.py) rather than this module naming
them after the function, so a function's own document reads as plainly as its code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.platform import ids
from shared.web import forms, pages

if TYPE_CHECKING:
    from shared.web.http import Function
    from shared.web.policy import Rule

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
    # Cloud Scheduler and Cloud Tasks: a Google-signed OIDC ID token of the service's own
    # account, with the function's URL as its audience (shared/identity/services.py).
    "googleOidc": {
        "type": "openIdConnect",
        "openIdConnectUrl": "https://accounts.google.com/.well-known/openid-configuration",
        "description": "A Google-signed OIDC ID token of a service account the policy names "
        "(Cloud Scheduler's, Cloud Tasks'), audience the function's URL.",
    },
}


def callers(rule: Rule) -> list[str]:
    """Who may call a route, as the `x-roles` extension says: its roles, then its Google-run
    callers as `service:<name>` (the actor the audit log names them by), or `public`."""
    if rule.public:
        return ["public"]
    return sorted(r.value for r in rule.roles) + sorted(f"service:{s.value}" for s in rule.services)


def security(rule: Rule) -> list[dict[str, list[str]]]:
    """The credentials a route takes: a person's session or ID token, a service's OIDC token."""
    schemes: list[dict[str, list[str]]] = []
    if rule.roles:
        schemes += [{"sessionCookie": []}, {"bearerIdToken": []}]
    return schemes + ([{"googleOidc": []}] if rule.services else [])


_STATUS_TEXT = {
    400: "Invalid input",
    401: "Not signed in, or the sign-in is no longer valid",
    403: "The caller's role, approval, origin or CSRF token does not allow this",
    404: "Not found (or not the caller's)",
    409: "Conflicts with the current state",
    413: "Body too large",
    415: "Body is not JSON",
    # Nothing changed is the rule; the few routes whose change stands before a later step
    # fails (admin-users' decision_unfinished, deletion_unfinished) say so in their summary.
    503: (
        "A dependency is unavailable: send the same request again after Retry-After. Nothing"
        " was changed, unless the route's description names a 503 code whose change stands"
    ),
}


# A route registered with html=True answers a browser a page (shared/web/pages.py).
HTML_CONTENT: dict[str, Any] = {"schema": {"type": "string"}}


def openapi_path(function: str, path: str) -> str:
    converted = _PARAM.sub(r"{\1}", path)
    return f"/{function}" + ("" if converted == "/" else converted)


def _schemas(fn: Function) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Every route's body, query and response model, in one pass so that the schemas they share
    (an enum a query and a response both use) are one component, and every `$ref` resolves."""
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    for route in fn.routes.values():
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.query is not None:
            wanted.append((route.query, "validation"))
        if route.response is not None:
            wanted.append((route.response, "serialization"))
    if not wanted:
        return {}, {}
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    return refs, top.get("$defs", {})


def _component(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).removeprefix(REF.format(model=""))


def _referenced(node: Any) -> set[str]:
    """The component schemas `node` names in its `$ref`s (not following them)."""
    if isinstance(node, dict):
        found = {_component(node)} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _referenced(value)
        return found
    if isinstance(node, list):
        return set().union(*(_referenced(v) for v in node)) if node else set()
    return set()


# Every path parameter is a document id (or "me"): shared/web/http.py answers 404 to anything
# else before routing, so the document says so and clients (and the fuzzer) send ids.
PATH_ID_SCHEMA = {"type": "string", "pattern": ids.DOC_ID_PATTERN, "maxLength": 256}


def document(fn: Function) -> dict[str, Any]:
    refs, schemas = _schemas(fn)
    schemas = {**schemas, "Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    query_models: set[str] = set()
    for route in fn.routes.values():
        op: dict[str, Any] = {
            "operationId": f"{fn.name}.{route.handler.__name__}",
            "summary": route.summary,
            "x-roles": callers(route.rule),
        }
        if route.rule.owner:
            op["x-owner-fields"] = list(route.rule.owner.fields)
        if not route.rule.public:
            op["security"] = security(route.rule)
        params = [
            {"name": name, "in": "path", "required": True, "schema": PATH_ID_SCHEMA}
            for name in _PARAM.findall(route.path)
        ]
        if route.query is not None:
            # A query model is documented as its parameters, whose schemas may name components.
            query_model = _component(refs[(route.query, "validation")])
            query_models.add(query_model)
            qschema = schemas[query_model]
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
            schema = {"schema": refs[(route.body, "validation")]}
            content = {"application/json": schema}
            if route.form:
                content.update({media: schema for media in forms.MEDIA_TYPES})
            op["requestBody"] = {"required": True, "content": content}
        ok: dict[str, Any] = {"description": "Success"}
        if route.response is not None:
            ok["content"] = {
                "application/json": {"schema": refs[(route.response, "serialization")]}
            }
        elif route.path == "/openapi.json":
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        if route.html:
            ok.setdefault("content", {})[pages.MEDIA_TYPE] = HTML_CONTENT
        responses: dict[str, Any] = {str(status): ok for status in (route.status, *route.also)}
        # What the pipeline itself may answer on this route, besides the handler's problems:
        # any body is bounded (413) and checked (400); a stored record that no longer parses
        # answers 409 record_unreadable; a changing call from a foreign origin is refused (403).
        codes = set(route.problems) | {400, 413, 503}
        if route.path != "/openapi.json":
            codes.add(409)
        if not route.rule.public or route.method not in ("GET", "HEAD", "OPTIONS"):
            codes.add(403)
        if not route.rule.public:
            codes.add(401)
        # 404: not the caller's, or a path whose id is empty or not an id (any route).
        codes.add(404)
        if route.body is not None:
            codes.add(415)
        for code in sorted(codes):
            responses[str(code)] = {
                "description": _STATUS_TEXT.get(code, "Error"),
                "content": {
                    "application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}
                },
            }
            if route.html and code in route.problems:  # a page saying what went wrong
                responses[str(code)]["content"][pages.MEDIA_TYPE] = HTML_CONTENT
        op["responses"] = responses
        paths.setdefault(openapi_path(fn.name, route.path), {})[route.method.lower()] = op
    # A query model's own schema is only its parameters' source: drop it unless a body or a
    # response also uses it.
    used = _referenced(paths) | _referenced(
        {k: v for k, v in schemas.items() if k not in query_models}
    )
    schemas = {k: v for k, v in schemas.items() if k not in query_models or k in used}
    return {
        "openapi": "3.1.0",
        "info": {"title": fn.title, "version": "1.0.0", "description": fn.description},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }

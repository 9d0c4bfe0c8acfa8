"""Each function serves a valid, complete OpenAPI 3.1 document; the gateway merges them, each
function's schemas under its own names."""

from __future__ import annotations

import copy
import json
from enum import StrEnum
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate

from dev.gateway import merge, namespace
from shared.platform import models
from shared.web import policy
from shared.web.http import Call, Function
from shared.web.openapi import openapi_path

SCHEMAS = "#/components/schemas/"


def refs_in(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs_in(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs_in(v) for v in node))
    return set()


@pytest.fixture(scope="module")
def documents(stack) -> dict[str, dict[str, Any]]:
    """Every function's own document, as it serves it."""
    found = {}
    for function in policy.FUNCTIONS:
        response = requests.get(f"{stack.gateway_url}/{function}/openapi.json", timeout=30)
        assert response.status_code == 200
        found[function] = response.json()
    return found


@pytest.fixture(scope="module")
def merged(stack) -> dict[str, Any]:
    response = requests.get(f"{stack.gateway_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


@pytest.mark.parametrize("function", policy.FUNCTIONS)
def test_function_document_is_valid_and_complete(documents, function):
    doc = documents[function]
    validate(doc)
    for fn, method, path in policy.POLICY:
        if fn != function:
            continue
        op = doc["paths"][openapi_path(fn, path)][method.lower()]
        rule = policy.POLICY[(fn, method, path)]
        services = [f"service:{s.value}" for s in sorted(rule.services)]
        assert op["x-roles"] == (sorted(r.value for r in rule.roles) + services or ["public"])
        assert ("security" in op) == (not rule.public)
        schemes = {name for option in op.get("security", []) for name in option}
        assert ("googleOidc" in schemes) == bool(rule.services), (method, path)
        assert ({"sessionCookie", "bearerIdToken"} <= schemes) == bool(rule.roles), (method, path)


def test_request_bodies_forbid_unknown_fields(documents):
    create = documents["admin-users"]["components"]["schemas"]["CreateAccount"]
    assert create["additionalProperties"] is False
    assert "sendPasswordLink" in create["properties"]


def test_gateway_merges_every_function_and_serves_docs(stack, merged):
    assert {openapi_path(fn, p) for fn, _, p in policy.POLICY} <= set(merged["paths"])
    page = requests.get(f"{stack.gateway_url}/docs", timeout=30)
    assert page.status_code == 200
    assert "/admin-users/{uid}/approval" in page.text


def test_merged_document_passes_openapi_spec_validator(merged):
    assert merged["openapi"] == "3.1.0"
    validate(merged)  # openapi-spec-validator: the 3.1 schema, and every $ref resolves


def test_merged_document_keeps_each_functions_schemas_apart(documents, merged):
    schemas = merged["components"]["schemas"]
    for function, doc in documents.items():
        prefix = namespace(function) + "_"
        own = doc["components"]["schemas"]
        renamed = {SCHEMAS + name: SCHEMAS + prefix + name for name in own}
        # Each schema is there under the function's name for it, with its refs renamed alike.
        for name, schema in own.items():
            expected = json.dumps(schema)
            for old, new in renamed.items():
                expected = expected.replace(f'"{old}"', f'"{new}"')
            assert schemas[prefix + name] == json.loads(expected), (function, name)
        # Its paths name only its own schemas.
        for path in doc["paths"]:
            for ref in refs_in(merged["paths"][path]):
                assert ref.startswith(SCHEMAS + prefix), (function, path, ref)
                assert ref.removeprefix(SCHEMAS) in schemas
    # Three functions each have a Status of their own, and they differ: none overwrote another.
    statuses = [schemas[f"{namespace(f)}_Status"]["enum"] for f in ("appointments", "bookings")]
    assert statuses[0] != statuses[1]
    assert (
        schemas["Appointments_Status"]
        == documents["appointments"]["components"]["schemas"]["Status"]
    )
    assert {r for r in refs_in(merged) if not r.startswith(SCHEMAS)} == set()


def test_security_schemes_are_shared_because_every_function_declares_the_same(documents, merged):
    declared = [doc["components"]["securitySchemes"] for doc in documents.values()]
    assert all(schemes == declared[0] for schemes in declared)
    assert merged["components"]["securitySchemes"] == declared[0]


# -- the merge, on documents made up here --------------------------------------------------


def part(status: list[str], scheme: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {},
        "components": {
            "schemas": {
                "Status": {"type": "string", "enum": status},
                "Thing": {
                    "type": "object",
                    "properties": {"status": {"$ref": SCHEMAS + "Status"}},
                },
            },
            "securitySchemes": {
                "bearerIdToken": scheme or {"type": "http", "scheme": "bearer"},
            },
        },
    }


def with_path(doc: dict[str, Any], path: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["paths"][path] = {
        "get": {
            "security": [{"bearerIdToken": []}],
            "responses": {
                "200": {
                    "description": "ok",
                    "content": {"application/json": {"schema": {"$ref": SCHEMAS + "Thing"}}},
                }
            },
        }
    }
    return doc


def test_merge_keeps_same_named_schemas_apart_and_rewrites_their_refs():
    doc = merge(
        {
            "appointments": with_path(part(["booked"]), "/appointments/mine"),
            "admin-users": with_path(part(["active"]), "/admin-users/mine"),
        }
    )
    validate(doc)
    schemas = doc["components"]["schemas"]
    assert set(schemas) == {
        "Appointments_Status",
        "Appointments_Thing",
        "AdminUsers_Status",
        "AdminUsers_Thing",
    }
    assert schemas["Appointments_Status"]["enum"] == ["booked"]
    assert schemas["AdminUsers_Status"]["enum"] == ["active"]
    assert schemas["AdminUsers_Thing"]["properties"]["status"] == {
        "$ref": SCHEMAS + "AdminUsers_Status"
    }
    ok = doc["paths"]["/appointments/mine"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": SCHEMAS + "Appointments_Thing"}


def test_merge_shares_identical_security_schemes_and_separates_differing_ones():
    bearer = {"type": "http", "scheme": "bearer"}
    other = {"type": "apiKey", "in": "header", "name": "X-Key"}
    doc = merge(
        {
            "a": with_path(part(["x"], bearer), "/a"),
            "b": with_path(part(["x"], bearer), "/b"),
            "c": with_path(part(["x"], other), "/c"),
        }
    )
    validate(doc)
    assert doc["components"]["securitySchemes"] == {
        "bearerIdToken": bearer,
        "C_bearerIdToken": other,
    }
    assert doc["paths"]["/b"]["get"]["security"] == [{"bearerIdToken": []}]
    assert doc["paths"]["/c"]["get"]["security"] == [{"C_bearerIdToken": []}]


def test_merge_refuses_what_it_cannot_keep_apart():
    dangling = with_path(part(["x"]), "/a")
    dangling["components"]["schemas"]["Thing"]["properties"]["status"]["$ref"] = SCHEMAS + "Nope"
    with pytest.raises(ValueError, match="names none of its schemas"):
        merge({"a": dangling})
    with pytest.raises(ValueError, match="share the names"):
        merge({"admin-users": part(["x"]), "admin_users": part(["y"])})
    with pytest.raises(ValueError, match="also another function's path"):
        merge({"a": with_path(part(["x"]), "/same"), "b": with_path(part(["x"]), "/same")})


# -- the generator ---------------------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"


class ColourQuery(models.Page):
    colour: Colour | None = None


class Shade(models.View):
    name: str


def test_a_query_only_enum_is_a_component_of_the_functions_own_document(monkeypatch):
    name = "openapi-test"
    monkeypatch.setattr(
        policy,
        "POLICY",
        {
            **policy.POLICY,
            (name, "GET", "/openapi.json"): policy.PUBLIC,
            (name, "GET", "/shades"): policy.PUBLIC,
        },
    )
    fn = Function(name, title="OpenAPI test")

    @fn.route("GET", "/shades", query=ColourQuery, response=Shade)
    def shades(call: Call) -> Shade:
        return Shade(name="x")

    doc = fn.openapi()
    validate(doc)  # the query's `$ref` to Colour resolves in the function's own document
    schemas = doc["components"]["schemas"]
    assert schemas["Colour"]["enum"] == ["red"]
    assert "ColourQuery" not in schemas  # documented as its parameters, not as a schema
    params = {p["name"]: p for p in doc["paths"]["/openapi-test/shades"]["get"]["parameters"]}
    assert set(params) == {"limit", "cursor", "colour"}
    assert refs_in(params["colour"]) == {SCHEMAS + "Colour"}


def test_service_callers_are_described_as_such(documents):
    """The Tasks worker is no public route, and a scheduled route says the scheduler calls it."""
    paths = documents["payouts"]["paths"]
    worker = paths["/payouts/tasks/send"]["post"]
    assert worker["x-roles"] == ["service:tasks"]
    assert worker["security"] == [{"googleOidc": []}]
    run = paths["/payouts/run"]["post"]
    assert run["x-roles"] == ["admin", "service:scheduler"]
    assert {"googleOidc": []} in run["security"]
    scheme = documents["payouts"]["components"]["securitySchemes"]["googleOidc"]
    assert scheme["type"] == "openIdConnect"


def test_every_route_that_reads_an_idempotency_key_documents_the_header():
    """A handler that calls `call.idempotency_key` takes the header: its route must say so, or
    the OpenAPI document (and every client generated from it) never learns the key exists."""
    import ast

    from tools.bundle import FUNCTIONS_DIR

    undeclared = []
    for main in sorted(FUNCTIONS_DIR.glob("*/main.py")):
        for node in ast.walk(ast.parse(main.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            reads = any(
                isinstance(n, ast.Attribute) and n.attr == "idempotency_key" for n in ast.walk(node)
            )
            routes = [
                d
                for d in node.decorator_list
                if isinstance(d, ast.Call) and ast.unparse(d.func) == "api.route"
            ]
            declared = any(
                kw.arg == "headers" and "idempotency.HEADER" in ast.unparse(kw.value)
                for d in routes
                for kw in d.keywords
            )
            if reads and routes and not declared:
                undeclared.append(f"{main.parent.name}.{node.name}")
    assert not undeclared, f"routes reading Idempotency-Key without declaring it: {undeclared}"

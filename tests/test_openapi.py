"""Each function serves a valid, complete OpenAPI 3.1 document; the gateway merges them."""

from __future__ import annotations

import pytest
import requests
from openapi_spec_validator import validate

from shared.web import policy
from shared.web.openapi import openapi_path


@pytest.mark.parametrize("function", policy.FUNCTIONS)
def test_function_document_is_valid_and_complete(stack, function):
    response = requests.get(f"{stack.gateway_url}/{function}/openapi.json", timeout=30)
    assert response.status_code == 200
    doc = response.json()
    validate(doc)
    for fn, method, path in policy.POLICY:
        if fn != function:
            continue
        op = doc["paths"][openapi_path(fn, path)][method.lower()]
        rule = policy.POLICY[(fn, method, path)]
        assert op["x-roles"] == (sorted(r.value for r in rule.roles) or ["public"])
        assert ("security" in op) == (not rule.public)


def test_request_bodies_forbid_unknown_fields(stack):
    doc = requests.get(f"{stack.gateway_url}/admin-users/openapi.json", timeout=30).json()
    create = doc["components"]["schemas"]["CreateAccount"]
    assert create["additionalProperties"] is False
    assert "sendPasswordLink" in create["properties"]


def test_gateway_merges_every_function_and_serves_docs(stack):
    merged = requests.get(f"{stack.gateway_url}/openapi.json", timeout=30).json()
    validate(merged)
    assert {openapi_path(fn, p) for fn, _, p in policy.POLICY} <= set(merged["paths"])
    page = requests.get(f"{stack.gateway_url}/docs", timeout=30)
    assert page.status_code == 200
    assert "/admin-users/{uid}/approval" in page.text

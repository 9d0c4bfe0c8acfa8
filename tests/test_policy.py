"""The RBAC table is complete, and every route answers each kind of caller as the table says."""

from __future__ import annotations

import re

import pytest
import requests

from dev.gateway import function_names
from shared.platform.context import Role
from shared.web import policy
from shared.web.http import Function
from tests import functions_index
from tests.support import Api, create_user, id_token

PRINCIPALS = ["anonymous", *[r.value for r in Role], "unapproved-doctor"]


def test_every_route_has_a_policy_and_every_policy_a_route():
    registered = functions_index.http_routes()
    assert registered == set(policy.POLICY)


def test_every_http_function_is_listed():
    http_functions = {fn for fn, _, _ in functions_index.http_routes()}
    assert http_functions == set(policy.FUNCTIONS)
    assert http_functions <= set(function_names())


def test_a_route_without_a_policy_cannot_be_registered():
    api = Function("session", title="t")
    with pytest.raises(policy.PolicyMissing):
        api.route("GET", "/not-in-the-table")


def _expected(rule: policy.Rule, who: str) -> str:
    if rule.public:
        return "through"
    if who == "anonymous":
        return "401"
    role = Role.DOCTOR if who == "unapproved-doctor" else Role(who)
    if role not in rule.roles:
        return "403"
    if who == "unapproved-doctor" and rule.approved:
        return "403"
    return "through"


def _concrete(path: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?\w+>", "no-such-id", path)


MATRIX = [
    pytest.param(key, who, id=f"{key[1]} /{key[0]}{key[2]} as {who}")
    for key in sorted(policy.POLICY)
    for who in PRINCIPALS
]


@pytest.mark.parametrize(("key", "who"), MATRIX)
def test_rbac_matrix(stack, key, who):
    function, method, path = key
    rule = policy.POLICY[key]
    api = Api(stack.gateway_url)
    if who != "anonymous":
        role = Role.DOCTOR if who == "unapproved-doctor" else Role(who)
        user = create_user(stack, role, approved=who != "unapproved-doctor")
        api.bearer = id_token(stack, user)

    url_path = f"/{function}" + ("" if path == "/" else _concrete(path))
    kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    response = api.request(method, url_path, **kwargs)

    expected = _expected(rule, who)
    if expected == "through":
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == int(expected), response.text
        assert response.headers["Content-Type"].startswith("application/problem+json")
        if expected == "403":
            assert response.json()["code"] in {"role_not_allowed", "not_approved"}


def test_unapproved_accounts_can_still_manage_their_own_sign_in(stack):
    doctor = create_user(stack, Role.DOCTOR, approved=False)
    response = requests.get(
        f"{stack.gateway_url}/session",
        headers={"Authorization": f"Bearer {id_token(stack, doctor)}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["approved"] is False

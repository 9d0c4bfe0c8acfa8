"""The check every response of tests.support.Api goes through: the merged OpenAPI document
describes it, or the test fails saying which operation and which JSON path."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests import openapi_support
from tests.openapi_support import ContractViolation
from tests.support import Api, problem

REQUEST_ID = "0123456789abcdef"


@pytest.fixture(autouse=True)
def failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests see the check fail, even in a run that lists mismatches instead."""
    monkeypatch.delenv(openapi_support.REPORT_ENV, raising=False)


def answer(
    stack: Any,
    method: str,
    path: str,
    status: int,
    body: Any = None,
    media: str = "application/json",
) -> requests.Response:
    """A response as requests would hand it over, to a request for `path` on the gateway."""
    response = requests.Response()
    response.status_code = status
    response._content = b"" if body is None else json.dumps(body).encode()
    if body is not None:
        response.headers["Content-Type"] = media
    response.request = requests.Request(method, stack.gateway_url + path).prepare()
    return response


def a_problem(status: Any, **fields: Any) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": "t",
        "status": status,
        "code": "c",
        "requestId": REQUEST_ID,
        **fields,
    }


def check(stack: Any, *args: Any, **kw: Any) -> None:
    openapi_support.check(stack.gateway_url, answer(stack, *args, **kw))


def test_the_api_client_checks_what_it_receives(stack):
    problem(Api(stack.gateway_url).get("/users/directory/doctors"), 401)


def test_a_documented_answer_passes(stack):
    check(stack, "GET", "/appointments/sweep-ish", 404, a_problem(404), "application/problem+json")
    check(stack, "POST", "/appointments/sweep", 200, {"expired": 3})
    check(stack, "GET", "/appointments/?limit=5", 200, {"items": [], "nextCursor": None})


def test_a_body_unlike_its_schema_fails_naming_the_operation_and_the_json_path(stack):
    with pytest.raises(ContractViolation) as caught:
        check(stack, "GET", "/appointments", 200, {"items": [{"id": 1}], "nextCursor": None})
    message = str(caught.value)
    assert "GET /appointments (appointments.list_appointments)" in message
    assert "$.items[0]" in message
    with pytest.raises(ContractViolation, match=r"\$\.expired: 'three' is not of type"):
        check(stack, "POST", "/appointments/sweep/", 200, {"expired": "three"})


def test_a_problem_unlike_the_documented_problem_fails(stack):
    bad = a_problem(404)
    del bad["requestId"]
    with pytest.raises(ContractViolation, match=r"404 application/problem\+json body at \$: "):
        check(stack, "GET", "/appointments/abc", 404, bad, "application/problem+json")


def test_an_undocumented_status_or_operation_fails(stack):
    with pytest.raises(ContractViolation, match="answered 418, which is not documented"):
        check(stack, "GET", "/appointments/abc", 418, a_problem(418), "application/problem+json")
    with pytest.raises(ContractViolation, match="no operation is documented for this path"):
        check(stack, "GET", "/appointments/abc/nothing", 200, {})
    with pytest.raises(ContractViolation, match="no operation is documented for this method"):
        check(stack, "PATCH", "/appointments/abc", 200, {})


def test_a_media_type_or_body_other_than_documented_fails(stack):
    with pytest.raises(ContractViolation, match="only application/json is documented"):
        check(stack, "POST", "/appointments/sweep", 200, {"expired": 3}, "text/plain")
    with pytest.raises(ContractViolation, match="200 has no body"):
        check(stack, "POST", "/appointments/sweep", 200)
    with pytest.raises(ContractViolation, match="204 has a application/json body"):
        check(stack, "DELETE", "/session", 204, {"gone": True})


def test_unrouted_answers_and_pipeline_statuses_pass_but_their_problems_are_checked(stack):
    media = "application/problem+json"
    check(stack, "GET", "/appointments/abc/nothing", 404, a_problem(404), media)
    check(stack, "PATCH", "/appointments/abc", 405, a_problem(405), media)
    check(stack, "GET", "/no-such-function", 404, a_problem(404), media)
    check(stack, "OPTIONS", "/appointments", 204)
    check(stack, "GET", "/appointments/abc", 500, a_problem(500), media)
    with pytest.raises(ContractViolation, match=r"\$\.status: 'x' is not of type 'integer'"):
        check(stack, "GET", "/appointments/abc", 500, a_problem("x"), media)


def test_mismatches_can_be_listed_instead_of_failing(stack, tmp_path, monkeypatch):
    report = tmp_path / "mismatches.jsonl"
    monkeypatch.setenv(openapi_support.REPORT_ENV, str(report))
    check(stack, "POST", "/appointments/sweep", 200, {"expired": "three"})
    [line] = [json.loads(x) for x in report.read_text().splitlines()]
    assert line["operation"] == "POST /appointments/sweep (appointments.sweep)"
    assert line["status"] == 200
    assert "$.expired" in line["problems"][0]

"""The PayPal simulator itself: its contract checks, buyer approval, negative testing, webhooks."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from dev.paypal_contract import Contract, ContractUnavailable
from shared.integrations.paypal import approve_link
from shared.platform.money import Money
from tests.paypal_support import Sim

ONE_DOLLAR = {
    "intent": "CAPTURE",
    "purchase_units": [{"amount": {"currency_code": "USD", "value": "1.00"}}],
}


def token(s: Sim) -> str:
    return s.client().access_token()


def post(s: Sim, path: str, body: Any, **headers: str) -> requests.Response:
    return requests.post(
        s.url + path,
        data=json.dumps(body),
        headers={
            "Authorization": f"Bearer {token(s)}",
            "Content-Type": "application/json",
            "PayPal-Request-Id": uuid.uuid4().hex,
            **headers,
        },
        timeout=30,
    )


def needs_contract(s: Sim) -> None:
    if not s.contract:
        pytest.skip(f"PayPal's OpenAPI files are not available: {s.contract_reason}")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "intent": "CAPTURE",
                "purchase_units": [{"amount": {"currency_code": "USD", "value": 10.5}}],
            },
            "purchase_units/0/amount/value",
        ),
        ({"purchase_units": [{"amount": {"currency_code": "USD", "value": "10.50"}}]}, "intent"),
        ({"intent": "CAPTURE", "purchase_units": []}, "purchase_units"),
    ],
)
def test_a_request_breaking_paypals_schema_is_refused_and_recorded(
    sim: Sim, body: dict[str, Any], field: str
) -> None:
    needs_contract(sim)
    response = post(sim, "/v2/checkout/orders", body)
    assert response.status_code == 400
    error = response.json()
    assert error["name"] == "INVALID_REQUEST"
    assert error["details"][0]["issue"] in (
        "INVALID_PARAMETER_SYNTAX",
        "MISSING_REQUIRED_PARAMETER",
    )
    taken = sim.control("DELETE", "/violations")["violations"]
    assert len(taken) == 1
    assert taken[0]["kind"] == "request"
    assert taken[0]["operation"] == "orders.create"
    assert field in " ".join(taken[0]["problems"]) or field.split("/")[-1] in str(taken[0])


def test_a_bad_header_breaks_the_contract_too(sim: Sim) -> None:
    needs_contract(sim)
    response = post(
        sim,
        "/v2/checkout/orders",
        ONE_DOLLAR,
        **{"PayPal-Request-Id": "x" * 200},
    )
    assert response.status_code == 400
    taken = sim.control("DELETE", "/violations")["violations"]
    assert "PayPal-Request-Id" in taken[0]["problems"][0]


def test_calls_without_a_token_are_401_in_paypals_shape(sim: Sim) -> None:
    response = requests.get(sim.url + "/v2/checkout/orders/ABC123", timeout=30)
    assert response.status_code == 401
    assert response.json()["name"] == "AUTHENTICATION_FAILURE"


def test_token_endpoint_speaks_client_credentials(sim: Sim) -> None:
    good = requests.post(
        sim.url + "/v1/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("sim-client-id", "sim-client-secret"),
        timeout=30,
    )
    assert good.status_code == 200
    assert good.json()["token_type"] == "Bearer"
    assert good.json()["expires_in"] > 0
    wrong = requests.post(
        sim.url + "/v1/oauth2/token",
        data={"grant_type": "password"},
        auth=("sim-client-id", "sim-client-secret"),
        timeout=30,
    )
    assert wrong.status_code == 400


def test_unknown_order_is_404(sim: Sim) -> None:
    from shared.integrations.paypal import PayPalError

    with pytest.raises(PayPalError) as caught:
        sim.client().get_order("NOSUCHORDER12345")
    assert caught.value.status == 404


def test_approval_happens_only_through_the_approve_link(sim: Sim) -> None:
    client = sim.client()
    order = client.create_order(Money("USD", 1200), request_id=uuid.uuid4().hex)
    assert client.get_order(order["id"])["status"] == "CREATED"
    sim.approve(order)
    shown = client.get_order(order["id"])
    assert shown["status"] == "APPROVED"
    assert shown["payer"]["email_address"]


def test_the_approval_page_asks_the_buyer_and_seeing_it_approves_nothing(sim: Sim) -> None:
    client = sim.client()
    order = client.create_order(Money("USD", 1250), request_id=uuid.uuid4().hex)
    link = approve_link(order)
    assert link is not None
    page = requests.get(link, timeout=30)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "12.50 USD" in page.text
    assert 'value="approve">Approve</button>' in page.text
    assert 'value="cancel">Cancel</button>' in page.text
    assert client.get_order(order["id"])["status"] == "CREATED"  # a visit is not consent


def test_approve_and_cancel_send_the_buyer_back_as_paypal_does(sim: Sim) -> None:
    client = sim.client()
    back = "http://127.0.0.1:5000/?paypal=return&order=ours-1"
    gone = "http://127.0.0.1:5000/?paypal=cancel&order=ours-1"

    def made() -> dict[str, Any]:
        return client.create_order(
            Money("USD", 900), request_id=uuid.uuid4().hex, return_url=back, cancel_url=gone
        )

    approved = made()
    assert "_return_url" not in json.dumps(client.get_order(approved["id"]))  # kept, not shown
    answer = sim.consent(approved, "approve")
    assert answer.status_code == 303
    assert answer.headers["Location"] == (
        f"{back}&token={approved['id']}&PayerID={client.get_order(approved['id'])['payer']['payer_id']}"
    )
    assert client.get_order(approved["id"])["status"] == "APPROVED"

    cancelled = made()
    answer = sim.consent(cancelled, "cancel")
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{gone}&token={cancelled['id']}"
    assert client.get_order(cancelled["id"])["status"] == "CREATED"  # nothing approved


def test_an_order_without_return_urls_ends_on_paypals_page(sim: Sim) -> None:
    client = sim.client()
    order = client.create_order(Money("USD", 500), request_id=uuid.uuid4().hex)
    answer = sim.consent(order, "approve")
    assert answer.status_code == 200
    assert f"Order {order['id']}: APPROVED." in answer.text


def test_a_mock_code_the_operation_does_not_have_is_400(sim: Sim) -> None:
    needs_contract(sim)
    response = post(
        sim,
        "/v2/checkout/orders",
        ONE_DOLLAR,
        **{"PayPal-Mock-Response": '{"mock_application_codes": "NOT_A_CODE"}'},
    )
    assert response.status_code == 400


def test_capture_and_refund_send_signed_webhooks(sim: Sim) -> None:
    import time

    client = sim.client()
    order = client.create_order(Money("USD", 3000), request_id=uuid.uuid4().hex)
    sim.approve(order)
    done = client.capture_order(order["id"], request_id=uuid.uuid4().hex)
    capture_id = done["purchase_units"][0]["payments"]["captures"][0]["id"]
    client.refund_capture(capture_id, request_id=uuid.uuid4().hex)

    def sent() -> list[dict[str, Any]]:
        return [
            w
            for w in sim.control("GET", "/webhooks")["webhooks"]
            if w["event"]["resource"].get("id") == capture_id
            or w["event"]["resource"].get("links", [{}])[-1].get("href", "").endswith(capture_id)
        ]

    for _ in range(100):  # delivered from a thread: wait for both, by count not by time
        if len(sent()) >= 2:
            break
        time.sleep(0.1)
    kinds = sorted(w["event"]["event_type"] for w in sent())
    assert kinds == ["PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.REFUNDED"]
    for w in sent():
        assert client.verify_webhook(w["headers"], w["event"]) is True
        assert w["headers"]["PAYPAL-AUTH-ALGO"] == "SHA256withRSA"
        assert requests.get(w["headers"]["PAYPAL-CERT-URL"], timeout=30).text.startswith(
            "-----BEGIN CERTIFICATE-----"
        )


def test_reversal_marks_the_capture_refunded_for_a_chargeback(sim: Sim) -> None:
    client = sim.client()
    order = client.create_order(Money("USD", 800), request_id=uuid.uuid4().hex)
    sim.approve(order)
    done = client.capture_order(order["id"], request_id=uuid.uuid4().hex)
    capture_id = done["purchase_units"][0]["payments"]["captures"][0]["id"]
    sent = sim.control(
        "POST", "/webhooks", json={"eventType": "PAYMENT.CAPTURE.REVERSED", "captureId": capture_id}
    )
    assert sent["event"]["resource"]["status"] == "REFUNDED"
    capture = client.get_capture(capture_id)
    assert capture["status_details"]["reason"] == "CHARGEBACK"


def test_contract_is_unavailable_with_a_reason_when_the_files_are_missing(tmp_path: Any) -> None:
    with pytest.raises(ContractUnavailable) as caught:
        Contract(tmp_path)
    assert "PAYPAL_OPENAPI_DIR" in str(caught.value)


def _capture_id(s: Sim) -> str:
    client = s.client()
    order = client.create_order(Money("USD", 1500), request_id=uuid.uuid4().hex)
    s.approve(order)
    done = client.capture_order(order["id"], request_id=uuid.uuid4().hex)
    return str(done["purchase_units"][0]["payments"]["captures"][0]["id"])


def test_a_previous_request_in_progress_is_a_409_resource_conflict(sim: Sim) -> None:
    """The Payments API's error_409: RESOURCE_CONFLICT, never a 500's name; the sim fixture
    fails the test should the answer break PayPal's contract."""
    capture_id = _capture_id(sim)
    mock = '{"mock_application_codes": "PREVIOUS_REQUEST_IN_PROGRESS"}'
    by_header = post(
        sim, f"/v2/payments/captures/{capture_id}/refund", {}, **{"PayPal-Mock-Response": mock}
    )
    sim.fault(mock="PREVIOUS_REQUEST_IN_PROGRESS", pathContains=f"{capture_id}/refund")
    by_control = post(sim, f"/v2/payments/captures/{capture_id}/refund", {})
    for answer in (by_header, by_control):
        assert answer.status_code == 409
        body = answer.json()
        assert body["name"] == "RESOURCE_CONFLICT"
        assert body["message"] == (
            "The server has detected a conflict while processing this request."
        )
        assert body["details"][0]["issue"] == "PREVIOUS_REQUEST_IN_PROGRESS"
    sim.fault(status=409, pathContains="/v2/checkout/orders")  # after the work, as a lost answer
    lost = post(sim, "/v2/checkout/orders", ONE_DOLLAR)
    assert (lost.status_code, lost.json()["name"]) == (409, "RESOURCE_CONFLICT")


def test_a_rate_limit_is_a_429_rate_limit_reached(sim: Sim) -> None:
    sim.fault(mock="RATE_LIMIT_REACHED", pathContains="/v2/checkout/orders")
    limited = post(sim, "/v2/checkout/orders", ONE_DOLLAR)
    assert limited.status_code == 429
    assert limited.json()["name"] == "RATE_LIMIT_REACHED"
    assert post(sim, "/v2/checkout/orders", ONE_DOLLAR).status_code == 201  # nothing was done

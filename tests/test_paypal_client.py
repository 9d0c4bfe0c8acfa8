"""shared.integrations.paypal against the simulator, over real HTTP, every call held to
PayPal's contract."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.integrations.paypal import (
    InstrumentDeclined,
    OrderAlreadyCaptured,
    OrderNotApproved,
    PayPalUnavailable,
    RefundRefused,
)
from shared.platform import errors
from shared.platform.money import Money
from tests.paypal_support import Sim

MOCK = "PayPal-Mock-Response"


def rid() -> str:
    return uuid.uuid4().hex


def captured(s: Sim) -> tuple[dict[str, Any], str]:
    client = s.client()
    order = client.create_order(Money("USD", 2500), request_id=rid(), reference_id="appt-1")
    s.approve(order)
    done = client.capture_order(order["id"], request_id=rid())
    return done, done["purchase_units"][0]["payments"]["captures"][0]["id"]


def test_token_is_cached_until_it_nears_expiry(sim: Sim) -> None:
    now = [1000.0]
    client = sim.client(clock=lambda: now[0])
    first = client.access_token()
    assert client.access_token() == first
    now[0] += 32400 - 301  # the sandbox's lifetime, less the renewal margin, less a second
    assert client.access_token() == first
    now[0] += 2
    assert client.access_token() != first


def test_create_approve_capture_refund(sim: Sim) -> None:
    client = sim.client()
    order = client.create_order(Money("USD", 2500), request_id=rid(), reference_id="appt-1")
    assert order["status"] == "CREATED"
    assert order["purchase_units"][0]["amount"] == {"currency_code": "USD", "value": "25.00"}
    with pytest.raises(OrderNotApproved):
        client.capture_order(order["id"], request_id=rid())
    sim.approve(order)
    assert client.get_order(order["id"])["status"] == "APPROVED"

    done = client.capture_order(order["id"], request_id=rid())
    assert done["status"] == "COMPLETED"
    capture_id = done["purchase_units"][0]["payments"]["captures"][0]["id"]
    capture = client.get_capture(capture_id)
    assert (capture["status"], capture["amount"]["value"]) == ("COMPLETED", "25.00")

    part = client.refund_capture(capture_id, request_id=rid(), money=Money("USD", 1000))
    assert (part["status"], part["amount"]["value"]) == ("COMPLETED", "10.00")
    assert client.get_capture(capture_id)["status"] == "PARTIALLY_REFUNDED"

    with pytest.raises(RefundRefused) as too_much:
        client.refund_capture(capture_id, request_id=rid(), money=Money("USD", 1501))
    assert too_much.value.issue == "REFUND_AMOUNT_EXCEEDED"

    rest = client.refund_capture(capture_id, request_id=rid())  # no amount: all that remains
    assert rest["amount"]["value"] == "15.00"
    assert client.get_capture(capture_id)["status"] == "REFUNDED"
    with pytest.raises(RefundRefused):
        client.refund_capture(capture_id, request_id=rid(), money=Money("USD", 1))


def test_same_request_id_replays_the_first_answer(sim: Sim) -> None:
    client = sim.client()
    key = rid()
    first = client.create_order(Money("EUR", 1999), request_id=key)
    again = client.create_order(Money("EUR", 1999), request_id=key)
    assert again["id"] == first["id"]
    sim.approve(first)
    capture_key = rid()
    done = client.capture_order(first["id"], request_id=capture_key)
    replay = client.capture_order(first["id"], request_id=capture_key)
    assert replay == done  # not ORDER_ALREADY_CAPTURED: the same request, answered the same
    capture_id = done["purchase_units"][0]["payments"]["captures"][0]["id"]
    refund_key = rid()
    refund = client.refund_capture(capture_id, request_id=refund_key, money=Money("EUR", 500))
    assert client.refund_capture(capture_id, request_id=refund_key, money=Money("EUR", 500)) == (
        refund
    )
    assert client.get_capture(capture_id)["status"] == "PARTIALLY_REFUNDED"


def test_a_second_capture_is_order_already_captured(sim: Sim) -> None:
    done, _ = captured(sim)
    with pytest.raises(OrderAlreadyCaptured):
        sim.client().capture_order(done["id"], request_id=rid())


def test_negative_testing_codes_are_typed(sim: Sim) -> None:
    client = sim.client()
    order = client.create_order(Money("USD", 500), request_id=rid())
    sim.approve(order)
    declined = {MOCK: '{"mock_application_codes": "INSTRUMENT_DECLINED"}'}
    with pytest.raises(InstrumentDeclined) as caught:
        client.capture_order(order["id"], request_id=rid(), headers=declined)
    assert caught.value.status == 422
    already = {MOCK: '{"mock_application_codes": "ORDER_ALREADY_CAPTURED"}'}
    with pytest.raises(OrderAlreadyCaptured):
        client.capture_order(order["id"], request_id=rid(), headers=already)
    # Neither mocked answer touched the order: it can still be captured.
    assert client.capture_order(order["id"], request_id=rid())["status"] == "COMPLETED"


def test_5xx_is_retried_with_the_same_request_id(sim: Sim) -> None:
    client = sim.client()
    order = client.create_order(Money("USD", 700), request_id=rid())
    sim.approve(order)
    key = rid()
    sim.fault(status=500, count=1, pathContains="/capture")
    assert client.capture_order(order["id"], request_id=key)["status"] == "COMPLETED"
    tries = sim.requests_with(key)
    assert len(tries) == 2
    assert {t["path"] for t in tries} == {f"/v2/checkout/orders/{order['id']}/capture"}


def test_mocked_internal_server_error_exhausts_the_retries(sim: Sim) -> None:
    client = sim.client(attempts=3)
    key = rid()
    broken = {MOCK: '{"mock_application_codes": "INTERNAL_SERVER_ERROR"}'}
    with pytest.raises(PayPalUnavailable) as caught:
        client.create_order(Money("USD", 100), request_id=key, headers=broken)
    assert isinstance(caught.value, errors.DependencyUnavailable)
    assert caught.value.status == 503
    assert len(sim.requests_with(key)) == 3


def test_timeouts_raise_the_typed_error_and_a_late_answer_is_not_repeated(sim: Sim) -> None:
    client = sim.client(timeout=0.5, attempts=2)
    order = client.create_order(Money("USD", 900), request_id=rid())
    sim.approve(order)
    key = rid()
    sim.fault(delay=3, count=2, pathContains="/capture")
    with pytest.raises(PayPalUnavailable):
        client.capture_order(order["id"], request_id=key)
    # PayPal did the work whose answer was lost; asking again with the same id gets that answer.
    assert client.capture_order(order["id"], request_id=key)["status"] == "COMPLETED"


def test_webhook_signature_is_verified_truthfully(sim: Sim) -> None:
    _, capture_id = captured(sim)
    sent = sim.control(
        "POST", "/webhooks", json={"eventType": "PAYMENT.CAPTURE.DENIED", "captureId": capture_id}
    )
    event, headers = sent["event"], sent["headers"]
    assert event["event_type"] == "PAYMENT.CAPTURE.DENIED"
    assert event["resource"]["id"] == capture_id
    client = sim.client()
    assert client.verify_webhook(headers, event) is True

    tampered = {**event, "resource": {**event["resource"], "id": "SOMEOTHERCAPTURE1"}}
    assert client.verify_webhook(headers, tampered) is False
    forged = {**headers, "PAYPAL-TRANSMISSION-ID": str(uuid.uuid4())}
    assert client.verify_webhook(forged, event) is False
    assert sim.client(webhook_id="ANOTHERWEBHOOK1").verify_webhook(headers, event) is False
    assert client.get_capture(capture_id)["status"] == "DECLINED"


def test_wrong_credentials_are_refused(sim: Sim) -> None:
    from shared.integrations.paypal import PayPal, PayPalError

    client = PayPal(sim.url, "sim-client-id", "not-the-secret")
    with pytest.raises(PayPalError) as caught:
        client.access_token()
    assert caught.value.status == 401


# -- "not now" versus "no": the one classification every caller uses ----------------------


def test_the_classification_of_paypals_answers() -> None:
    from shared.integrations.paypal import transient

    for status in (401, 408, 409, 429, 500, 502, 503, 504):
        assert transient(status), status
    for status in (400, 403, 404, 415, 422):
        assert not transient(status), status


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [("PREVIOUS_REQUEST_IN_PROGRESS", 409, 5), ("RATE_LIMIT_REACHED", 429, 30)],
)
def test_paypal_saying_not_now_is_unavailable_and_the_same_request_refunds_later(
    sim: Sim, code: str, status: int, retry_after: int
) -> None:
    _, capture_id = captured(sim)
    client = sim.client()
    key = rid()
    busy = {MOCK: f'{{"mock_application_codes": "{code}"}}'}
    with pytest.raises(PayPalUnavailable) as caught:
        client.refund_capture(capture_id, request_id=key, money=Money("USD", 500), headers=busy)
    assert caught.value.status == 503
    assert caught.value.paypal_status == status
    assert caught.value.headers == {"Retry-After": str(retry_after)}
    if status == 409:
        assert (caught.value.name, caught.value.issue) == ("RESOURCE_CONFLICT", code)
    else:
        assert caught.value.name == "RATE_LIMIT_REACHED"
    assert len(sim.requests_with(key)) == 1  # not hammered: the caller tries again later
    done = client.refund_capture(capture_id, request_id=key, money=Money("USD", 500))
    assert done["status"] == "COMPLETED"
    assert client.get_capture(capture_id)["status"] == "PARTIALLY_REFUNDED"


def test_paypals_definite_refusals_stay_errors(sim: Sim) -> None:
    from shared.integrations.paypal import PayPalError

    _, capture_id = captured(sim)
    client = sim.client()
    for code in ("CAPTURE_FULLY_REFUNDED", "PERMISSION_DENIED"):
        refused = {MOCK: f'{{"mock_application_codes": "{code}"}}'}
        with pytest.raises(PayPalError) as caught:
            client.refund_capture(capture_id, request_id=rid(), headers=refused)
        assert not isinstance(caught.value, PayPalUnavailable)
        assert caught.value.issue == code
    assert client.get_capture(capture_id)["status"] == "COMPLETED"


def test_a_token_paypal_dropped_is_renewed_and_the_call_made_once_more(sim: Sim) -> None:
    client = sim.client()
    client.access_token()
    assert client._token is not None
    client._token.value = "A21AAdroppedbypaypal"  # PayPal forgot it before its stated expiry
    order = client.create_order(Money("USD", 300), request_id=rid())
    assert order["status"] == "CREATED"
    assert client._token.value != "A21AAdroppedbypaypal"


def test_credentials_paypal_refuses_make_a_call_unavailable_not_refused(sim: Sim) -> None:
    """No token is no judgment of the payment: the work waits (503), it is not given up."""
    from shared.integrations.paypal import PayPal

    client = PayPal(sim.url, "sim-client-id", "not-the-secret", sleep=lambda s: None)
    with pytest.raises(PayPalUnavailable) as caught:
        client.create_order(Money("USD", 300), request_id=rid())
    assert caught.value.paypal_status == 401
    assert caught.value.headers == {"Retry-After": "60"}


def test_a_capture_meeting_a_rate_limit_answers_503_with_retry_after_not_502(
    stack: Any, sim: Sim, admin: Any
) -> None:
    """The classification as a route's caller sees it: PayPal's 429 is the dependency being
    unavailable (503, Retry-After), not PayPal refusing the payment (502 paypal_refused);
    nothing is recorded, and the next capture, the same request, is taken."""
    from tests.payment_support import book_visit, ledger_of, stored_order
    from tests.support import problem

    visit = book_visit(stack, admin)
    order: dict[str, Any] = visit.order().json()
    sim.approve({"links": [{"rel": "approve", "href": order["approveLink"]}]})
    sim.fault(mock="RATE_LIMIT_REACHED", pathContains=f"{order['paypalOrderId']}/capture")
    busy = visit.capture(order["id"])
    problem(busy, 503, "paypal_unavailable")
    assert busy.headers["Retry-After"] == "30"
    assert stored_order(order["id"])["status"] == "created"
    assert ledger_of(order["id"]) == []
    tried = [
        r
        for r in sim.control("GET", "/requests")["requests"]
        if r["path"].endswith(f"{order['paypalOrderId']}/capture")
    ]
    assert len(tried) == 1  # a rate limit is not hammered with the client's quick retries

    again = visit.capture(order["id"])
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "captured"
    assert len(sim.requests_with(tried[0]["requestId"])) == 2  # the same request, again

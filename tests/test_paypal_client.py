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

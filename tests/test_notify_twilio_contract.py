"""Twilio's OpenAPI file as the SMS simulator's contract, without a stack: the simulator
refuses and records what breaks it, and answers in shapes that keep it."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from dev import twilio_contract, twilio_sim
from shared.integrations import twilio

try:
    CONTRACT: twilio_contract.Contract | None = twilio_contract.Contract()
    REASON = ""
except twilio_contract.ContractUnavailable as exc:
    CONTRACT, REASON = None, str(exc)

needs_contract = pytest.mark.skipif(CONTRACT is None, reason=REASON or "contract available")
SID, TOKEN = twilio_sim.DEFAULT_ACCOUNT_SID, twilio_sim.DEFAULT_AUTH_TOKEN
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"


def _client() -> Any:
    app = twilio_sim.create_app(contract=CONTRACT, step_seconds=0.0)
    auth = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    return app, app.test_client(), {"Authorization": f"Basic {auth}"}


@needs_contract
def test_a_send_as_our_client_makes_it_keeps_the_contract_both_ways():
    app, client, auth = _client()
    form = {"To": "+15551234567", "From": "+15005550006", "Body": "Merhaba"}
    created = client.post(MESSAGES, data=form, headers=auth)
    assert created.status_code == 201, created.text
    sid = created.json["sid"]
    fetched = client.get(f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json", headers=auth)
    assert fetched.json["body"] == "Merhaba"
    listed = client.get(MESSAGES, query_string={"To": "+15551234567", "PageSize": 5}, headers=auth)
    assert [m["sid"] for m in listed.json["messages"]] == [sid]
    assert app.config["state"].violations == []


@needs_contract
def test_a_request_that_breaks_the_contract_is_refused_and_recorded():
    app, client, auth = _client()
    refused = client.post(MESSAGES, data={"From": "+15005550006", "Bogus": "1"}, headers=auth)
    assert refused.status_code == 400
    assert refused.json["code"] in (21211, 20001)
    (violation,) = app.config["state"].violations
    assert violation["operation"] == "CreateMessage"
    assert any("'To' is a required property" in p for p in violation["problems"])
    assert any("Bogus" in p for p in violation["problems"])
    json_body = client.post(MESSAGES, json={"To": "+15551234567"}, headers=auth)
    assert json_body.status_code == 400  # Twilio takes forms, not JSON


def test_wrong_credentials_are_refused_as_twilio_refuses_them():
    _, client, _ = _client()
    bad = base64.b64encode(f"{SID}:wrong".encode()).decode()
    response = client.post(
        MESSAGES,
        data={"To": "+15551234567", "From": "+15005550006", "Body": "x"},
        headers={"Authorization": f"Basic {bad}"},
    )
    assert response.status_code == 401
    assert response.json["code"] == 20003


def test_our_signature_check_agrees_with_twilios_algorithm_and_refuses_changes():
    url = "https://api.example.test/notifications/twilio/status?n=abc"
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered", "To": "+1555"}
    signed = twilio_sim.twilio_signature(TOKEN, url, params)
    assert twilio.valid_signature(TOKEN, url, params, signed)
    assert not twilio.valid_signature(TOKEN, url + "x", params, signed)
    assert not twilio.valid_signature(TOKEN, url, {**params, "MessageStatus": "failed"}, signed)
    assert not twilio.valid_signature("another", url, params, signed)
    assert not twilio.valid_signature(TOKEN, url, params, "")
    assert not twilio.valid_signature("", url, params, signed)


def test_twilios_documented_example_signature():
    # The worked example of Twilio's security documentation ("Validating Signatures").
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675310",
        "Digits": "1234",
        "From": "+14158675310",
        "To": "+18005551212",
    }
    expected = "GvWf1cFY/Q7PnoempGyD5oXAezc="
    assert twilio_sim.twilio_signature("12345", url, params) == expected
    assert twilio.valid_signature("12345", url, params, expected)

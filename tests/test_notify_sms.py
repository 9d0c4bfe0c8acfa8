"""SMS notices through the Twilio simulator (held to Twilio's OpenAPI file), and Twilio's signed
status callbacks into the notifications function."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

from dev.stack import TWILIO_SIM_ACCOUNT_SID, TWILIO_SIM_AUTH_TOKEN
from shared.notify import service
from tests.notify_support import (
    channel,
    channel_state,
    later,
    notice,
    phone_number,
    queue,
    recipient,
    settled,
)
from tests.support import Api, eventually, problem

pytest_plugins = ("tests.notify_fixtures",)  # sms, mail

WINDOW = {"bookingId": "b-1", "windowStart": datetime(2031, 5, 6, 8, 0, tzinfo=UTC)}


def _sweep(admin: Api) -> None:
    assert admin.post("/notifications/sweep").status_code == 200


def _receipts(admin: Api, notice_id: str) -> list[dict[str, Any]]:
    response = admin.get(f"/notifications/notices/{notice_id}")
    assert response.status_code == 200, response.text
    receipts: list[dict[str, Any]] = response.json()["receipts"]
    return receipts


def test_an_sms_goes_out_and_twilios_signed_reports_are_kept(stack, sms, mail, admin):
    phone = phone_number()
    user = recipient(stack, phone=phone)
    notice_id = queue(user, "booking_accepted", WINDOW)

    sent = channel_state(notice_id, "sms", "sent")
    (message,) = sms.messages(phone)
    assert message["sid"] == sent["providerId"]
    assert message["body"].startswith("Alo Doktor: the clinic accepted your booking for 06 May")
    assert message["from"] == "+15005550006"
    reports = eventually(
        lambda: _receipts(admin, notice_id),
        lambda r: {x["status"] for x in r} >= {"sent", "delivered"},
        "Twilio's reports",
    )
    assert {r["sid"] for r in reports} == {message["sid"]}
    assert all(c["status"] == 204 for c in sms.callbacks(message["sid"]))
    assert len(mail.wait(user.email)) == 1  # the e-mail of the same notice


def test_a_forged_or_replayed_status_callback_changes_nothing(stack, sms, admin):
    phone = phone_number()
    user = recipient(stack, phone=phone)
    notice_id = queue(user, "booking_accepted", WINDOW)
    sid = channel_state(notice_id, "sms", "sent")["providerId"]
    genuine = eventually(
        lambda: [c for c in sms.callbacks(sid) if c["params"]["MessageStatus"] == "delivered"],
        bool,
        "the delivered report",
    )[0]
    url, params = genuine["url"], genuine["params"]
    before = len(eventually(lambda: _receipts(admin, notice_id), lambda r: len(r) >= 2, "kept"))

    def post(form: dict[str, str], signature: str | None, to: str = url) -> requests.Response:
        headers = {"X-Twilio-Signature": signature} if signature is not None else {}
        return requests.post(to, data=form, headers=headers, timeout=30)

    forged = {**params, "MessageStatus": "failed", "ErrorCode": "30008"}
    genuine_signature = _signature_of(stack, url, params)
    problem(post(forged, None), 403, "signature_invalid")  # unsigned
    problem(post(forged, genuine_signature), 403, "signature_invalid")  # altered
    problem(post(forged, _signed_with("not-the-auth-token", url, forged)), 403, "signature_invalid")
    other = url.replace(f"n={notice_id}", "n=another-notice")
    problem(post(params, genuine_signature, other), 403, "signature_invalid")  # moved
    # Replayed as Twilio sent it (Twilio retries callbacks): acknowledged, kept once.
    replay = requests.post(
        url,
        data=params,
        headers={"X-Twilio-Signature": _signature_of(stack, url, params)},
        timeout=30,
    )
    assert replay.status_code == 204, replay.text
    after = _receipts(admin, notice_id)
    assert len(after) == before
    assert "failed" not in {r["status"] for r in after}


def _signature_of(stack: Any, url: str, params: dict[str, str]) -> str:
    return _signed_with(TWILIO_SIM_AUTH_TOKEN, url, params)


def _signed_with(token: str, url: str, params: dict[str, str]) -> str:
    """As Twilio signs (the simulator's own, independent, code)."""
    from dev.twilio_sim import twilio_signature

    return twilio_signature(token, url, params)


def test_429_and_5xx_are_retried_and_the_text_goes_out_once(stack, sms, admin):
    busy, broken = phone_number(), phone_number()
    sms.fault(busy, status=429)
    sms.fault(broken, status=503)
    first = queue(recipient(stack, phone=busy), "booking_declined", {**WINDOW, "reason": None})
    second = queue(recipient(stack, phone=broken), "booking_declined", {**WINDOW, "reason": None})

    assert "429" in channel_state(first, "sms", "retry")["lastError"]
    assert "503" in channel_state(second, "sms", "retry")["lastError"]
    assert sms.messages(busy) == []
    assert sms.messages(broken) == []
    for notice_id in (first, second):
        later(notice_id)
    _sweep(admin)
    for notice_id, phone in ((first, busy), (second, broken)):
        assert channel_state(notice_id, "sms", "sent")["attempts"] == 2
        assert len(sms.messages(phone)) == 1


def test_an_sms_whose_answer_was_lost_is_looked_up_not_sent_again(stack, sms, admin):
    phone = phone_number()
    sms.fault(phone, delay=5)  # Twilio makes the message, its answer comes after our timeout
    notice_id = queue(recipient(stack, phone=phone), "booking_accepted", WINDOW)

    lost = channel_state(notice_id, "sms", "retry")
    assert lost["unknown"] is True
    (made,) = eventually(lambda: sms.messages(phone), bool, "the message Twilio made")
    later(notice_id)
    _sweep(admin)

    found = channel_state(notice_id, "sms", "sent")
    assert found["providerId"] == made["sid"]
    assert len(sms.messages(phone)) == 1
    attempts = service.history(notice_id)[0]
    assert [a["detail"] for a in attempts if a["channel"] == "sms"][-1] == "found at Twilio"


def test_a_recipient_who_replied_stop_is_not_texted_again(stack, sms, admin):
    phone = phone_number()
    sms.fault(phone, outcome="undelivered", errorCode=21610)
    user = recipient(stack, phone=phone)
    notice_id = queue(user, "booking_accepted", WINDOW)
    channel_state(notice_id, "sms", "sent")
    eventually(
        lambda: _receipts(admin, notice_id),
        lambda r: any(x["status"] == "undelivered" and x["errorCode"] == 21610 for x in r),
        "the carrier's refusal",
    )

    again = queue(user, "booking_declined", {**WINDOW, "reason": "Full"})
    assert settled(again)["channels"]["sms"]["reason"] == "suppressed"
    assert len(sms.messages(phone)) == 1
    assert channel(again, "email")["state"] in ("sent", "pending", "sending")
    assert notice(again)["recipient"]["phone"] == phone


def test_the_account_of_a_report_must_be_ours(stack, sms):
    phone = phone_number()
    notice_id = queue(recipient(stack, phone=phone), "booking_accepted", WINDOW)
    sid = channel_state(notice_id, "sms", "sent")["providerId"]
    url = f"{stack.gateway_url}/notifications/twilio/status?n={notice_id}"
    params = {
        "AccountSid": "AC" + "0" * 32,
        "MessageSid": sid,
        "MessageStatus": "delivered",
        "To": phone,
    }
    response = requests.post(
        url,
        data=params,
        headers={"X-Twilio-Signature": _signature_of(stack, url, params)},
        timeout=30,
    )
    problem(response, 403, "signature_invalid")
    assert params["AccountSid"] != TWILIO_SIM_ACCOUNT_SID


def test_form_bodies_are_taken_only_where_a_route_takes_them_and_only_well_formed(stack):
    url = f"{stack.gateway_url}/notifications/twilio/status?n=some-notice"
    sid = "SM" + "0" * 32
    fields = f"MessageSid={sid}&MessageStatus=delivered&AccountSid={TWILIO_SIM_ACCOUNT_SID}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    # A form repeating a field is refused before anything reads it: which value a signature
    # check and the handler each took would otherwise be anyone's guess.
    repeated = f"{fields}&MessageStatus=failed"
    problem(requests.post(url, data=repeated, headers=form, timeout=30), 400, "malformed_form")
    for broken in (b"MessageSid", b"\xff\xfe=1", b"a=1&&b"):
        problem(requests.post(url, data=broken, headers=form, timeout=30), 400, "malformed_form")
    # Well-formed but missing fields: validated as the JSON body would be.
    errors = problem(
        requests.post(url, data="MessageStatus=delivered", headers=form, timeout=30),
        400,
        "validation_failed",
    )["errors"]
    assert {e["field"] for e in errors} >= {"MessageSid", "AccountSid"}
    # Well-formed and complete, but not signed by Twilio.
    problem(requests.post(url, data=fields, headers=form, timeout=30), 403, "signature_invalid")
    # Any other type is refused, naming both that this route takes.
    refused = problem(
        requests.post(url, data=fields, headers={"Content-Type": "text/plain"}, timeout=30),
        415,
        "unsupported_media_type",
    )
    assert "application/x-www-form-urlencoded" in refused["detail"]

    # A route that takes JSON only still refuses a form, naming JSON alone.
    json_only = problem(
        requests.post(f"{stack.gateway_url}/session", data="idToken=x", headers=form, timeout=30),
        415,
        "unsupported_media_type",
    )
    assert "form" not in json_only["detail"]
    openapi = requests.get(f"{stack.gateway_url}/notifications/openapi.json", timeout=30).json()
    paths = {
        path.rpartition("/notifications")[2] or path: ops for path, ops in openapi["paths"].items()
    }
    takes = paths["/twilio/status"]["post"]["requestBody"]["content"]
    assert set(takes) == {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    devices = paths["/devices"]["post"]["requestBody"]["content"]
    assert set(devices) == {"application/json"}

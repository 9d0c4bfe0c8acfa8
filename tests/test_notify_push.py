"""Push notices: devices registered through the API, sent by firebase_admin.messaging to the
stack's FCM v1 endpoint; FCM's answers (UNREGISTERED, QUOTA_EXCEEDED, a partly failed
multicast) handled as FCM documents them."""

from __future__ import annotations

import uuid

from tests.notify_support import PAYMENT, channel_state, later, notice, queue, recipient
from tests.support import Api, bearer, problem

pytest_plugins = ("tests.notify_fixtures",)  # push, mail


def _token() -> str:
    return "fcm-" + uuid.uuid4().hex + uuid.uuid4().hex


def _register(api: Api, token: str, platform: str = "android") -> dict[str, str]:
    response = api.post("/notifications/devices", json={"token": token, "platform": platform})
    assert response.status_code == 201, response.text
    device: dict[str, str] = response.json()
    return device


def _devices(api: Api) -> list[dict[str, str]]:
    response = api.get("/notifications/devices")
    assert response.status_code == 200, response.text
    items: list[dict[str, str]] = response.json()["items"]
    return items


def test_a_registered_device_gets_the_push(stack, push, mail):
    user = recipient(stack)
    api = bearer(stack, user)
    token = _token()
    device = _register(api, token, "ios")
    assert device["tokenEnd"] == token[-6:]
    assert "token" not in device

    notice_id = queue(user, "payment_received", PAYMENT)
    sent = channel_state(notice_id, "push", "sent")
    (message,) = push.messages(token)
    assert message["notification"] == {
        "title": "Payment received",
        "body": "20.00 USD, order order-1",
    }
    assert message["data"] == {
        "kind": "payment_received",
        "noticeId": notice_id,
        "orderId": "order-1",
    }
    assert sent["providerId"].startswith("projects/demo-alodoktor/messages/")


def test_an_unregistered_token_is_deleted(stack, push, mail):
    user = recipient(stack)
    api = bearer(stack, user)
    token = _token()
    _register(api, token)
    push.rule(token, "UNREGISTERED", count=None)

    notice_id = queue(user, "payment_received", PAYMENT)
    failed = channel_state(notice_id, "push", "failed")
    assert "UNREGISTERED" in failed["lastError"]
    assert _devices(api) == []
    # The next notice finds no device: push is not even tried.
    again = queue(user, "refund_completed", {**PAYMENT, "refundId": "r-1"})
    assert channel_state(again, "push", "skipped")["reason"] == "no_address"


def test_quota_exceeded_is_retried_later(stack, push, admin, mail):
    user = recipient(stack)
    token = _token()
    _register(bearer(stack, user), token)
    push.rule(token, "QUOTA_EXCEEDED", count=1)

    notice_id = queue(user, "payment_received", PAYMENT)
    waiting = channel_state(notice_id, "push", "retry")
    assert "QUOTA_EXCEEDED" in waiting["lastError"]
    assert push.messages(token) == []
    later(notice_id)
    assert admin.post("/notifications/sweep").status_code == 200
    channel_state(notice_id, "push", "sent")
    assert len(push.messages(token)) == 1


def test_a_partly_failed_multicast_resends_only_to_the_devices_that_missed_it(
    stack, push, admin, mail
):
    user = recipient(stack)
    api = bearer(stack, user)
    phone, tablet, old = _token(), _token(), _token()
    for token in (phone, tablet, old):
        _register(api, token)
    push.rule(tablet, "QUOTA_EXCEEDED", count=1)
    push.rule(old, "UNREGISTERED", count=None)

    notice_id = queue(user, "payment_received", PAYMENT)
    waiting = channel_state(notice_id, "push", "retry")
    assert len(waiting["sentTokens"]) == 1
    assert len(push.messages(phone)) == 1
    assert {d["tokenEnd"] for d in _devices(api)} == {phone[-6:], tablet[-6:]}
    later(notice_id)
    assert admin.post("/notifications/sweep").status_code == 200

    channel_state(notice_id, "push", "sent")
    assert len(push.messages(phone)) == 1  # never twice
    assert len(push.messages(tablet)) == 1
    assert push.messages(old) == []
    assert notice(notice_id)["outcome"] == "sent"


def test_devices_are_their_owners_alone(stack):
    owner, stranger = recipient(stack), recipient(stack)
    owner_api, stranger_api = bearer(stack, owner), bearer(stack, stranger)
    device = _register(owner_api, _token())

    assert _devices(stranger_api) == []
    problem(stranger_api.delete(f"/notifications/devices/{device['id']}"), 404)
    assert len(_devices(owner_api)) == 1
    assert owner_api.delete(f"/notifications/devices/{device['id']}").status_code == 204
    assert _devices(owner_api) == []
    problem(owner_api.delete(f"/notifications/devices/{device['id']}"), 404)


def test_a_token_is_validated(stack):
    api = bearer(stack, recipient(stack))
    problem(api.post("/notifications/devices", json={"token": "short", "platform": "ios"}), 400)
    problem(api.post("/notifications/devices", json={"token": _token(), "platform": "fax"}), 400)

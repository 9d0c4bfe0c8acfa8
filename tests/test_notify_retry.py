"""Every later send of a notice (an admin's retry, a backoff retry whose time came) is decided
by the same rule as its first send: an address a hard bounce suppressed, or a category the user
turned off since, is skipped, and the channel's state says why."""

from __future__ import annotations

from typing import Any

from tests.notify_support import PAYMENT, channel_state, later, queue, recipient
from tests.support import Api, bearer, eventually

pytest_plugins = ("tests.notify_fixtures",)  # mail


def _retry(admin: Api, notice_id: str) -> dict[str, Any]:
    response = admin.post(f"/notifications/notices/{notice_id}/retry")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_admin_retry_does_not_send_to_an_address_a_hard_bounce_suppressed(stack, mail, admin):
    user = recipient(stack)
    mail.fault(user.email, 550)  # once: were it tried again, the sink would take the mail
    notice_id = queue(user, "payment_received", PAYMENT)
    assert "550" in channel_state(notice_id, "email", "failed")["lastError"]

    notice = _retry(admin, notice_id)["notice"]
    email = notice["channels"]["email"]
    assert (email["state"], email["reason"]) == ("skipped", "suppressed")
    assert notice["outcome"] == "skipped"
    assert mail.messages(user.email) == []


def test_an_admin_retry_does_not_send_a_category_the_user_turned_off(stack, mail, admin):
    user = recipient(stack)
    mail.fault(user.email, 554, stage="data")  # permanent, but no bounce of the address
    notice_id = queue(user, "payment_received", PAYMENT)
    channel_state(notice_id, "email", "failed")
    off = bearer(stack, user).request(
        "PUT", "/notifications/preferences", json={"channels": {"payments": {"email": False}}}
    )
    assert off.status_code == 200, off.text

    email = _retry(admin, notice_id)["notice"]["channels"]["email"]
    assert (email["state"], email["reason"]) == ("skipped", "opted_out")
    assert mail.messages(user.email) == []


def test_a_backoff_retry_skips_an_address_suppressed_while_it_waited(stack, mail, admin):
    user = recipient(stack)
    mail.fault(user.email, 421)
    waiting = queue(user, "payment_received", PAYMENT)
    channel_state(waiting, "email", "retry")
    # Meanwhile another notice to the address bounces for good.
    mail.fault(user.email, 550)
    bounced = queue(user, "refund_completed", {**PAYMENT, "refundId": "r-1"})
    channel_state(bounced, "email", "failed")

    later(waiting)
    assert admin.post("/notifications/sweep").status_code == 200
    email = eventually(
        lambda: channel_state(waiting, "email", "skipped"), bool, "the retry is skipped"
    )
    assert email["reason"] == "suppressed"
    assert mail.messages(user.email) == []

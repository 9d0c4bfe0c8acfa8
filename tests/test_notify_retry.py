"""Every later send of a notice (an admin's retry, a backoff retry whose time came) is decided
by the same rule as its first send: an address a hard bounce suppressed, or a category the user
turned off since, is skipped, and the channel's state says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.notify import service
from shared.platform import store
from tests.notify_support import PAYMENT, channel, channel_state, later, queue, recipient
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


def _quiet_now(user: Any) -> None:
    """Quiet hours around now, in a zone of the user's own, ending two hours from now."""
    zone = "Asia/Tokyo"
    now_there = datetime.now(ZoneInfo(zone))
    quiet = {
        "start": (now_there - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now_there + timedelta(hours=2)).strftime("%H:%M"),
    }
    store.set(
        service.preferences_ref(user.uid),
        {"uid": user.uid, "timeZone": zone, "quietHours": quiet},
        merge=True,
        by="test",
    )


def test_a_backoff_retry_due_in_quiet_hours_waits_until_they_end(stack, mail, admin):
    """A retry is held by quiet hours set since its first send, as a first send would be;
    a security notice, which ignores quiet hours, is not held."""
    user = recipient(stack)
    mail.down()
    payment = queue(user, "payment_received", PAYMENT)
    reset = queue(user, "password_reset", {"link": "https://example.test/r"})
    channel_state(payment, "email", "retry")
    channel_state(reset, "email", "retry")
    mail.up()
    _quiet_now(user)

    later(payment)
    later(reset)
    assert admin.post("/notifications/sweep").status_code == 200
    channel_state(reset, "email", "sent")
    held = channel_state(payment, "email", "retry")
    assert held["reason"] == "quiet_hours"
    assert held["nextAt"] > datetime.now(UTC) + timedelta(minutes=100)
    assert held["attempts"] == 1  # waiting is no attempt
    (sent,) = mail.messages(user.email)
    assert sent["subject"].startswith("Reset your")
    # And the next sweep leaves it waiting too.
    assert admin.post("/notifications/sweep").status_code == 200
    assert channel(payment, "email")["state"] == "retry"
    assert len(mail.messages(user.email)) == 1

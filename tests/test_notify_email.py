"""E-mail notices, end to end on the local stack: the outbox, the relay's event, notify, a real
SMTP server. Tests read the mail the server received."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from dev import relay
from shared.notify import service
from tests.notify_support import (
    PAYMENT,
    channel,
    channel_state,
    later,
    notice,
    queue,
    recipient,
    settled,
    unannounced,
)
from tests.support import Api, problem

pytest_plugins = ("tests.notify_fixtures",)  # mail


def _sweep(admin: Api, limit: int = 100) -> dict[str, Any]:
    response = admin.post("/notifications/sweep", params={"limit": limit})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_payment_notice_arrives_as_a_real_mail_with_text_html_and_unsubscribe(stack, mail):
    user = recipient(stack, name="Ayşe Çelik")
    notice_id = queue(user, "payment_received", PAYMENT)

    (message,) = mail.wait(user.email)
    assert message["rcptTos"] == [user.email]
    assert message["subject"] == "Payment received: 20.00 USD"
    assert "Hello Ayşe Çelik" in message["text"]
    assert "<strong>20.00 USD</strong>" in message["html"]
    assert message["messageId"] == service.message_id_of(notice_id)
    headers = message["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.fullmatch(r"<(.+)>", headers["List-Unsubscribe"])
    assert link is not None
    assert link.group(1).startswith(f"{stack.gateway_url}/notifications/unsubscribe?token=")
    assert settled(notice_id)["outcome"] == "sent"
    assert channel(notice_id, "email")["state"] == "sent"


def test_a_password_link_has_no_unsubscribe_and_goes_by_mail_only(stack, mail):
    user = recipient(stack, phone="+15551230001")
    notice_id = queue(user, "password_reset", {"link": "https://example.test/reset?oob=x&y=1"})

    (message,) = mail.wait(user.email)
    assert "List-Unsubscribe" not in message["headers"]
    assert "https://example.test/reset?oob=x&y=1" in message["text"]
    assert 'href="https://example.test/reset?oob=x&amp;y=1"' in message["html"]
    assert set(settled(notice_id)["channels"]) == {"email"}  # never by SMS or push


def test_html_in_a_users_name_is_shown_as_text_not_markup(stack, mail):
    user = recipient(stack, name='<img src=x onerror="alert(1)">Eve')
    queue(user, "payment_received", PAYMENT)

    (message,) = mail.wait(user.email)
    assert "<img" not in message["html"]
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;Eve" in message["html"]
    assert '<img src=x onerror="alert(1)">Eve' in message["text"]  # plain text is not markup


def test_turkish_preference_gets_the_turkish_template_in_the_users_time_zone(stack, mail):
    user = recipient(stack, prefs={"locale": "tr", "timeZone": "Europe/Istanbul"})
    window = datetime(2031, 3, 4, 9, 30, tzinfo=UTC)
    queue(user, "booking_accepted", {"bookingId": "b-1", "windowStart": window, "reason": None})

    (message,) = mail.wait(user.email)
    assert message["subject"] == "Klinik randevunuz kabul edildi"
    assert "04.03.2031 12:30 (Europe/Istanbul)" in message["text"]


def test_redelivered_events_send_one_mail(stack, mail):
    user = recipient(stack)
    notice_id = queue(
        user, "payment_received", PAYMENT, not_before=datetime.now(UTC) + timedelta(hours=1)
    )
    settled(notice_id)  # the relay's own event came: nothing was due yet
    later(notice_id)
    snap = service.notices().document(notice_id).get()
    path = f"notifications/{notice_id}"
    event = relay.cloud_event(
        stack.project_id, path, None, snap, datetime.now(UTC), relay.CREATED_TYPE
    )

    def post(_: int) -> int:
        response = requests.post(
            f"{stack.gateway_url}/notify", data=event.body, headers=event.headers, timeout=60
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(post, range(6)))
    assert all(s < 300 for s in statuses), statuses
    assert len(mail.wait(user.email)) == 1
    assert settled(notice_id)["outcome"] == "sent"
    assert len(mail.messages(user.email)) == 1


def test_concurrent_sweeps_send_each_notice_once(stack, mail, admin):
    users = [recipient(stack) for _ in range(6)]
    later_on = datetime.now(UTC) + timedelta(hours=1)
    ids = [queue(u, "payment_received", PAYMENT, not_before=later_on) for u in users]
    for notice_id in ids:
        settled(notice_id)
        later(notice_id)
    second = stack.spawn_extra_gateway()  # another instance of every function
    try:
        other = Api(second, bearer=admin.bearer)
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(_sweep, [admin, other, admin, other, admin, other]))
    finally:
        stack.stop_extra_gateways()
    assert sum(r["delivered"] for r in results) >= len(ids)
    for user in users:
        assert len(mail.wait(user.email)) == 1
    for notice_id in ids:
        assert notice(notice_id)["outcome"] == "sent"
    for user in users:
        assert len(mail.messages(user.email)) == 1


def test_a_refused_connection_is_retried_with_backoff_and_sent_once_up(stack, mail, admin):
    user = recipient(stack)
    mail.down()
    try:
        notice_id = queue(user, "payment_received", PAYMENT)
        email = channel_state(notice_id, "email", "retry")
    finally:
        mail.up()
    assert email["attempts"] == 1
    assert email["nextAt"] > datetime.now(UTC)  # not before its backoff
    assert "Error" in email["lastError"] or "refused" in email["lastError"].lower()
    later(notice_id)
    _sweep(admin)
    assert len(mail.wait(user.email)) == 1
    assert channel_state(notice_id, "email", "sent")["attempts"] == 2


def test_421_is_temporary_and_550_is_a_hard_bounce_that_suppresses_the_address(stack, mail, admin):
    busy, gone = recipient(stack), recipient(stack)
    mail.fault(busy.email, 421)
    mail.fault(gone.email, 550, count=None)
    busy_id = queue(busy, "payment_received", PAYMENT)
    gone_id = queue(gone, "payment_received", PAYMENT)

    assert "421" in channel_state(busy_id, "email", "retry")["lastError"]
    bounced = channel_state(gone_id, "email", "failed")
    assert bounced["attempts"] == 1
    assert "550" in bounced["lastError"]
    later(busy_id)
    _sweep(admin)
    assert channel_state(busy_id, "email", "sent")
    # The bounce put the address on the suppression list: the next notice does not try it.
    again = queue(gone, "refund_completed", {**PAYMENT, "refundId": "r-1"})
    assert settled(again)["channels"]["email"]["reason"] == "suppressed"
    assert mail.messages(gone.email) == []


def test_a_crash_after_the_server_took_the_mail_resends_at_most_once_with_one_message_id(
    stack, mail, admin, monkeypatch
):
    user = recipient(stack)
    notice_id = queue(
        user, "payment_received", PAYMENT, not_before=datetime.now(UTC) + timedelta(hours=1)
    )
    settled(notice_id)
    later(notice_id)

    def crash(*args: Any, **kwargs: Any) -> str:
        raise SystemExit("killed after the SMTP server accepted the message")

    monkeypatch.setattr(service, "_finish", crash)
    with pytest.raises(SystemExit):
        service.deliver(notice_id)
    monkeypatch.undo()
    assert len(mail.wait(user.email)) == 1
    assert notice(notice_id)["status"] == "sending"  # its lease holds it until it runs out
    _sweep(admin)
    assert len(mail.messages(user.email)) == 1
    later(notice_id)  # the lease runs out
    _sweep(admin)

    first, second = mail.wait(user.email, 2)
    assert first["messageId"] == second["messageId"] == service.message_id_of(notice_id)
    assert channel_state(notice_id, "email", "sent")["attempts"] == 2
    _sweep(admin)
    assert len(mail.messages(user.email)) == 2


def test_an_opted_out_category_is_skipped_but_security_notices_still_arrive(stack, mail):
    user = recipient(stack, prefs={"channels": {"payments": {"email": False}}})
    paid = queue(user, "payment_received", PAYMENT)
    reset = queue(user, "password_reset", {"link": "https://example.test/r"})

    assert settled(paid)["channels"]["email"] == {**channel(paid, "email"), "state": "skipped"}
    assert channel(paid, "email")["reason"] == "opted_out"
    (message,) = mail.wait(user.email)
    assert message["subject"].startswith("Reset your")
    assert settled(reset)["outcome"] == "sent"


def test_quiet_hours_hold_a_reminder_but_not_a_security_notice(stack, mail):
    zone = "Asia/Tokyo"
    from zoneinfo import ZoneInfo

    now_there = datetime.now(ZoneInfo(zone))
    start = (now_there - timedelta(hours=1)).strftime("%H:%M")
    end = (now_there + timedelta(hours=2)).strftime("%H:%M")
    user = recipient(stack, prefs={"timeZone": zone, "quietHours": {"start": start, "end": end}})
    reminder = queue(
        user,
        "appointment_reminder",
        {"appointmentId": "a-1", "start": datetime.now(UTC) + timedelta(hours=5)},
    )
    reset = queue(user, "password_reset", {"link": "https://example.test/r"})

    held = channel_state(reminder, "email", "pending")
    assert held["reason"] == "quiet_hours"
    assert held["nextAt"] > datetime.now(UTC) + timedelta(minutes=100)
    (message,) = mail.wait(user.email)
    assert message["subject"].startswith("Reset your")
    assert settled(reset)["outcome"] == "sent"


def test_one_click_unsubscribe_turns_that_category_off(stack, mail):
    user = recipient(stack)
    queue(user, "payment_received", PAYMENT)
    (message,) = mail.wait(user.email)
    url = message["headers"]["List-Unsubscribe"].strip("<>")

    preview = requests.get(url, timeout=30)
    assert preview.status_code == 200
    assert preview.json()["unsubscribed"] is False
    # What a mail client sends for RFC 8058: a form POST, no cookie, no session.
    done = requests.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=30)
    assert done.status_code == 200, done.text
    assert done.json() == {"category": "payments", "channel": "email", "unsubscribed": True}

    after = queue(user, "refund_completed", {**PAYMENT, "refundId": "r-2"})
    assert settled(after)["channels"]["email"]["reason"] == "opted_out"
    assert len(mail.messages(user.email)) == 1


def test_a_tampered_or_made_up_unsubscribe_token_is_refused(stack, mail):
    user = recipient(stack)
    queue(user, "payment_received", PAYMENT)
    (message,) = mail.wait(user.email)
    url = message["headers"]["List-Unsubscribe"].strip("<>")
    token = url.split("token=")[1]
    payload, signature = token.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature

    for bad in (forged, payload + "." + "x" * 43, "not-a-token-at-all"):
        response = requests.post(
            f"{stack.gateway_url}/notifications/unsubscribe",
            params={"token": bad},
            data={"List-Unsubscribe": "One-Click"},
            timeout=30,
        )
        problem(response, 400, "unsubscribe_token_invalid")
    prefs = service.preferences(user.uid)
    assert prefs["channels"]["payments"]["email"] is True


def test_an_admin_sees_the_history_and_retries_a_failed_notice(stack, mail, admin):
    user = recipient(stack)
    mail.fault(user.email, 554, stage="data")  # permanent, but not a bounce of the address
    notice_id = queue(user, "payment_received", PAYMENT)
    channel_state(notice_id, "email", "failed")

    history = admin.get(f"/notifications/notices/{notice_id}")
    assert history.status_code == 200, history.text
    body = history.json()
    assert body["notice"]["channels"]["email"]["state"] == "failed"
    assert body["notice"]["dataKeys"] == ["amount", "currency", "orderId"]  # values not shown
    assert [a["outcome"] for a in body["attempts"]] == ["permanent"]

    retried = admin.post(f"/notifications/notices/{notice_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["notice"]["channels"]["email"]["state"] == "sent"
    assert [a["outcome"] for a in retried.json()["attempts"]] == ["permanent", "sent"]
    assert len(mail.wait(user.email)) == 1
    problem(admin.post(f"/notifications/notices/{notice_id}/retry"), 409, "nothing_to_retry")


def test_notices_and_their_history_are_for_admins_only(stack, mail):
    from tests.support import bearer

    user = recipient(stack)
    notice_id = queue(user, "payment_received", PAYMENT)
    settled(notice_id)
    own = bearer(stack, user)
    problem(own.get(f"/notifications/notices/{notice_id}"), 403, "role_not_allowed")
    problem(own.get("/notifications/notices"), 403, "role_not_allowed")
    problem(own.post("/notifications/sweep"), 403, "role_not_allowed")


def test_a_notice_whose_event_never_came_is_delivered_by_the_sweep(stack, mail, admin):
    user = recipient(stack)
    notice_id = queue(
        user, "payment_received", PAYMENT, not_before=datetime.now(UTC) + timedelta(hours=1)
    )
    settled(notice_id)
    unannounced(notice_id)
    assert notice(notice_id)["status"] == "queued"
    assert _sweep(admin)["delivered"] >= 1
    assert len(mail.wait(user.email)) == 1
    assert settled(notice_id)["outcome"] == "sent"


def test_cloud_scheduler_runs_the_sweep_and_cloud_tasks_may_not(stack, mail):
    from shared.platform.context import Service
    from tests.support import service_api

    scheduler = service_api(stack, Service.SCHEDULER, "notifications")
    swept = scheduler.post("/notifications/sweep", params={"limit": 10})
    assert swept.status_code == 200, swept.text
    assert set(swept.json()) >= {"examined", "delivered", "sent", "waiting", "failed", "more"}
    tasks = service_api(stack, Service.TASKS, "notifications")
    problem(tasks.post("/notifications/sweep"), 403, "service_not_allowed")


def test_opting_out_after_a_reminder_was_planned_stops_it_when_its_time_comes(stack, mail, admin):
    from tests.support import bearer

    user = recipient(stack)
    reminder = queue(
        user,
        "appointment_reminder",
        {"appointmentId": "a-2", "start": datetime.now(UTC) + timedelta(days=2)},
        not_before=datetime.now(UTC) + timedelta(days=1),
    )
    assert settled(reminder)["channels"]["email"]["state"] == "pending"
    changed = bearer(stack, user).request(
        "PUT", "/notifications/preferences", json={"channels": {"reminders": {"email": False}}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["channels"]["reminders"]["email"] is False
    later(reminder)
    _sweep(admin)

    skipped = channel_state(reminder, "email", "skipped")
    assert skipped["reason"] == "opted_out"
    assert notice(reminder)["outcome"] == "skipped"
    assert mail.messages(user.email) == []

"""Nothing is ever sent to an erased account (issue 27), whatever queued the notice and with
whatever address: bookings, orders and refunds are kept under a legal hold with the patient's
address, and a notice queued from one after the erasure (a clinic's decline, a refund) is
cancelled by notify's claim, which reads the account's access record (a tombstone once it is
erased) with the recipient's preferences, and is stripped of its address and contents as the
erasure strips the notices it finds. Security notices, sent whatever the preferences, are no
exception; nor is a retry of a notice planned before the account was erased."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.identity import access
from shared.notify import service
from shared.platform import clients, store
from shared.platform.context import Role, Service
from shared.privacy import rules as privacy_rules
from tests.notify_support import (
    PAYMENT,
    Mail,
    channel_state,
    later,
    notice,
    queue,
    recipient,
    settled,
)
from tests.support import (
    bearer,
    clinic_setup,
    create_user,
    erasure_due_now,
    eventually,
    service_api,
)

pytest_plugins = ("tests.notify_fixtures",)  # mail

ZONE = "Asia/Jakarta"


def _erase(stack: Any, user: Any) -> None:
    """The account asks to be erased and the scheduled run carries it out."""
    asked = bearer(stack, user).post("/privacy/erasure")
    assert asked.status_code == 201, asked.text
    erasure_due_now(asked.json()["id"])
    ran = service_api(stack, Service.SCHEDULER, "privacy").post("/privacy/erasure/run")
    assert ran.status_code == 200, ran.text
    assert asked.json()["id"] in ran.json()["erased"], ran.text


def _cancelled_for_erasure(notice_id: str, ended: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The notice stopped for its account's erasure: every channel but those that had `ended`
    before (skipped, sent) cancelled with that reason."""
    done = settled(notice_id)
    assert done["status"] == "cancelled", done
    assert done["cancelled"] is True
    assert done["cancelReason"] == "recipient_erased"
    # Stripped as the erasure strips the notices it finds: no address, no contents.
    assert (done["to"], done["data"], done["recipient"]) == (None, None, None)
    assert done["channels"]
    for name, c in done["channels"].items():
        if name not in ended:
            assert (c["state"], c["reason"]) == ("cancelled", "recipient_erased"), name
    return done


def _notices(uid: str) -> list[dict[str, Any]]:
    return service.list_notices(uid=uid, status=None, limit=50, cursor=None)[0]


def _declines(mail: Mail, to: str) -> list[dict[str, Any]]:
    return [m for m in mail.messages(to) if "declined" in m["subject"].lower()]


def test_a_clinic_declining_an_erased_patients_booking_mails_nobody(stack, mail):
    owner = create_user(stack, Role.CLINIC)
    clinic = bearer(stack, owner)
    setup = clinic.request("PUT", "/bookings/clinics/me", json=clinic_setup(ZONE))
    assert setup.status_code == 200, setup.text
    patient = create_user(stack, Role.PATIENT)
    day = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=2)
    booked = bearer(stack, patient).post(
        "/bookings",
        json={
            "clinicUid": owner.uid,
            "serviceId": "checkup",
            "windowStart": f"{day.isoformat()}T08:00:00+07:00",
        },
    )
    assert booked.status_code == 201, booked.text
    # A booking to come holds up a patient's erasure; this one is still open afterwards as one
    # made before that rule, or racing the run, would be: set aside while the erasure runs.
    kept = clients.db().collection("bookings").document(booked.json()["id"])
    store.update(kept, {"status": "cancelled"}, by="test")
    _erase(stack, patient)
    store.update(kept, {"status": "requested"}, by="test")
    told = len(mail.messages(patient.email))  # the erasure's own notice, before it ran

    declined = clinic.post(f"/bookings/{booked.json()['id']}/decline", json={"reason": "Away."})
    assert declined.status_code == 200, declined.text

    (notice_id,) = [n["id"] for n in _notices(patient.uid) if n["kind"] == "booking_declined"]
    _cancelled_for_erasure(notice_id)
    assert _declines(mail, patient.email) == []
    assert len(mail.messages(patient.email)) == told


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("refund_completed", {**PAYMENT, "refundId": "r-erased"}),
        ("password_reset", {"link": "https://example.test/reset"}),  # security: no exception
    ],
)
def test_a_notice_queued_for_an_erased_account_with_its_old_address_is_cancelled(
    stack, mail, kind, data
):
    user = recipient(stack, phone="+15550001234")
    _erase(stack, user)
    told = len(mail.messages(user.email))

    notice_id = queue(user, kind, data)  # with the address the held order kept

    _cancelled_for_erasure(notice_id)
    assert len(mail.messages(user.email)) == told


def test_a_retry_of_a_notice_planned_before_the_account_was_erased_is_cancelled(stack, mail, admin):
    """A long erasure writes the tombstone first and strips the notices over several runs: a
    retry that comes due meanwhile is judged on the tombstone, not sent."""
    user = recipient(stack)
    mail.down()
    notice_id = queue(user, "payment_received", PAYMENT)
    channel_state(notice_id, "email", "retry")
    mail.up()
    access.write(access.deleted(user.uid), by="test")  # an erasure's first step

    later(notice_id)
    assert admin.post("/notifications/sweep").status_code == 200
    eventually(lambda: notice(notice_id), lambda d: d.get("cancelled") is True, "cancelled")
    done = _cancelled_for_erasure(notice_id, ended=frozenset({"push"}))
    assert (done["channels"]["push"]["state"], done["channels"]["email"]["attempts"]) == (
        "skipped",  # no device: skipped at its first send, and left so
        1,
    )
    assert mail.messages(user.email) == []


def test_notify_strips_what_the_erasure_strips_of_a_notice():
    (holding,) = [h for h in privacy_rules.HOLDINGS if h.collection == service.NOTIFICATIONS]
    assert set(service.ERASED_SCRUBBED) == set(holding.scrubbed)


def test_an_erased_accounts_notice_is_cancelled_at_once_by_the_trigger(stack, mail):
    """The trigger (no sweep) cancels it too: one decision for every way out."""
    user = recipient(stack)
    access.write(access.deleted(user.uid), by="test")
    notice_id = queue(user, "payment_received", PAYMENT)
    done = eventually(
        lambda: notice(notice_id), lambda d: d.get("status") == "cancelled", "cancelled"
    )
    assert done["cancelReason"] == "recipient_erased"
    assert mail.messages(user.email) == []
    assert datetime.now(UTC) - done["cancelledAt"] < timedelta(minutes=5)

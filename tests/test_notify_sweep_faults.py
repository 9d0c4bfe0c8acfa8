"""The sweep under faults, against the stack's emulators and SMTP sink: a notice that cannot be
built, a record Firestore would not take at once, a slow relay while leases run, a sweep
cancelled halfway, a connection left mid-transaction. Each notice still goes out once, no lease
is left held by a sweep that gave up on it, and nothing it sent goes unrecorded."""

from __future__ import annotations

import smtplib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core.exceptions import ServiceUnavailable
from google.cloud.firestore_v1.batch import WriteBatch
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

from shared.identity import profiles
from shared.integrations import smtp
from shared.notify import service
from shared.platform import clients, outbox, store
from tests import notify_support as ns
from tests.support import Api, User

pytest_plugins = ("tests.notify_fixtures",)  # mail


def _drain() -> None:
    while service.sweep(limit=500).examined:
        pass


def _due(users: list[User], per_user: int = 1) -> list[str]:
    """Payment notices planned by their trigger, then due for the sweep, in this order."""
    later_on = datetime.now(UTC) + timedelta(hours=1)
    ids = [
        ns.queue(user, "payment_received", {**ns.PAYMENT, "orderId": f"o-{n}"}, not_before=later_on)
        for user in users
        for n in range(per_user)
    ]
    for notice_id in ids:
        ns.settled(notice_id)
        ns.later(notice_id)
    return ids


def _history_outcomes(notice_id: str) -> list[str]:
    return [a["outcome"] for a in ns.notice(notice_id).get("history") or []]


def test_a_notice_whose_mail_cannot_be_built_fails_alone_and_its_page_goes_out(
    stack, mail, admin: Api
):
    users = [ns.recipient(stack) for _ in range(3)]
    broken_user = ns.recipient(stack)
    _drain()
    later_on = datetime.now(UTC) + timedelta(hours=1)
    broken = f"test-broken-{broken_user.uid}"
    batch = clients.db().batch()
    # An address no header can carry: its mail cannot be built, whatever is sent.
    outbox.queue(
        batch,
        broken_user.uid,
        f"{broken_user.email}\nBcc: someone@example.test",
        "payment_received",
        ns.PAYMENT,
        "test",
        notice_id=broken,
        not_before=later_on,
    )
    batch.commit()
    ns.settled(broken)
    ns.later(broken)
    ids = _due(users)

    response = admin.post("/notifications/sweep", params={"limit": 500})

    assert response.status_code == 200, response.text
    for user, notice_id in zip(users, ids, strict=True):
        assert ns.notice(notice_id)["outcome"] == "sent"
        assert len(mail.messages(user.email)) == 1
    doc = ns.notice(broken)
    assert (doc["status"], doc["lease"]) == ("done", None)
    assert doc["channels"]["email"]["state"] == "failed"
    assert _history_outcomes(broken) == ["permanent"]


def test_a_sent_mail_is_recorded_while_the_next_one_is_still_being_sent(stack, mail, monkeypatch):
    """A record must not wait for later mails: behind a slow relay its lease would run out
    unrecorded, and the worker that takes it over would send the mail again."""
    first, second = ns.recipient(stack), ns.recipient(stack)
    _drain()
    first_id, _ = _due([first, second])
    real = service.Sending.mail
    waited = threading.Event()

    def slow(self: service.Sending, message: smtp.Mail) -> smtp.Answer:
        if message.to == second.email and not waited.is_set():
            waited.set()
            threading.Event().wait(2.5)  # a slow relay, while the first mail's lease runs
            ns.later(first_id)  # ... until it runs out
            service.sweep(limit=500)  # and another worker sweeps
        return real(self, message)

    monkeypatch.setattr(service.Sending, "mail", slow)
    service.sweep(limit=500)

    assert waited.is_set()
    assert len(mail.messages(first.email)) == 1
    assert len(mail.messages(second.email)) == 1
    assert _history_outcomes(first_id) == ["sent"]


def _fails_once_on_records(monkeypatch: pytest.MonkeyPatch, cls: Any) -> list[int]:
    """Firestore unavailable for the first request of `cls` that records an attempt."""
    real, failed = cls.commit, []

    def commit(self: Any, *args: Any, **kw: Any) -> Any:
        records = any("history" in w.update_mask.field_paths for w in self._write_pbs)
        if records and not failed:
            failed.append(len(self._write_pbs))
            raise ServiceUnavailable("injected: the record's request failed")
        return real(self, *args, **kw)

    monkeypatch.setattr(cls, "commit", commit)
    return failed


def test_a_record_firestore_refused_once_is_written_again_not_dropped(stack, mail, monkeypatch):
    users = [ns.recipient(stack) for _ in range(2)]
    _drain()
    ids = _due(users)
    batched = _fails_once_on_records(monkeypatch, BulkWriteBatch)
    alone = _fails_once_on_records(monkeypatch, WriteBatch)

    result = service.sweep(limit=500)
    monkeypatch.undo()

    assert (len(batched), len(alone)) == (1, 1)  # the batched record, then a record alone
    assert result.sent == len(ids)
    for notice_id in ids:
        doc = ns.notice(notice_id)
        assert (doc["status"], doc["lease"], doc["outcome"]) == ("done", None, "sent")
        assert _history_outcomes(notice_id) == ["sent"]
        assert doc["channels"]["email"]["attempts"] == 1
    for notice_id in ids:  # nothing is left for a later worker to send again
        ns.later(notice_id)
    service.sweep(limit=500)
    for user in users:
        assert len(mail.messages(user.email)) == 1


class Cancelled(BaseException):
    pass


def test_a_sweep_cancelled_halfway_records_what_it_sent_and_gives_the_rest_back(
    stack, mail, monkeypatch
):
    users = [ns.recipient(stack) for _ in range(4)]
    _drain()
    ids = _due(users, 6)  # 24: the first claim request holds 10
    real, sent = service.Sending.mail, []

    def cancelled_at_the_fourth(self: service.Sending, message: smtp.Mail) -> smtp.Answer:
        if len(sent) == 3:
            raise Cancelled
        sent.append(message.to)
        return real(self, message)

    monkeypatch.setattr(service.Sending, "mail", cancelled_at_the_fourth)
    threads = threading.active_count()
    with pytest.raises(Cancelled):
        service.sweep(limit=500)
    monkeypatch.undo()

    assert threading.active_count() == threads
    docs = {i: ns.notice(i) for i in ids}
    done = [i for i, d in docs.items() if d["status"] == "done"]
    given_back = [i for i, d in docs.items() if d["status"] == "pending"]
    held = [i for i, d in docs.items() if d["status"] == "sending"]
    assert len(done) == 3  # the three sent, recorded
    assert len(held) <= 1  # the one cancelled mid-send: it may have gone; its lease decides
    assert len(given_back) == len(ids) - 3 - len(held)  # none left leased, none claimed on
    for notice_id in given_back:
        email = docs[notice_id]["channels"]["email"]
        assert (email["state"], email["attempts"]) == ("retry", 0)
        assert docs[notice_id]["lease"] is None
    for notice_id in held:
        ns.later(notice_id)
    service.sweep(limit=500)
    for user in users:
        assert len(mail.messages(user.email)) == 6
    for notice_id in ids:
        assert _history_outcomes(notice_id) == ["sent"]


def test_a_mail_that_raised_mid_transaction_leaves_no_transaction_for_the_next(
    stack, mail, monkeypatch
):
    first, second = ns.recipient(stack), ns.recipient(stack)
    real, raised = smtplib.SMTP.rcpt, []

    def rcpt(self: smtplib.SMTP, *args: Any, **kw: Any) -> Any:
        if not raised:
            raised.append(True)
            raise RuntimeError("a bug after MAIL FROM was taken")
        return real(self, *args, **kw)

    def message(to: str) -> smtp.Mail:
        return smtp.Mail("noreply@alodoktor.test", to, "Hello", "Hi.", "<p>Hi.</p>", f"<{to}>")

    monkeypatch.setattr(smtplib.SMTP, "rcpt", rcpt)
    with service._relay().session() as session:
        with pytest.raises(RuntimeError):
            session.send(message(first.email))
        answer = session.send(message(second.email))
    assert answer.accepted, answer
    assert len(mail.messages(second.email)) == 1


def test_a_recipient_whose_profile_cannot_be_read_for_does_not_stop_the_sweep(
    stack, mail, admin: Api
):
    users = [ns.recipient(stack) for _ in range(2)]
    odd = ns.recipient(stack)
    _drain()
    ids = _due(users)
    # A profile whose address is no address (a hand edit, an old record), and a notice that
    # names none: its recipient's reads cannot be judged with the others'.
    store.update(profiles.ref(odd.uid), {"email": 12345}, by="test")
    batch = clients.db().batch()
    outbox.queue(batch, odd.uid, "", "payment_received", ns.PAYMENT, "test")
    batch.commit()

    try:
        response = admin.post("/notifications/sweep", params={"limit": 500})
    finally:  # deliverable again, for the sweeps of later tests
        store.update(profiles.ref(odd.uid), {"email": odd.email}, by="test")

    assert response.status_code == 200, response.text
    for user, notice_id in zip(users, ids, strict=True):
        assert ns.notice(notice_id)["outcome"] == "sent"
        assert len(mail.messages(user.email)) == 1

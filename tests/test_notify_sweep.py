"""The sweep at scale, in the tests' own process against the stack's emulators and SMTP sink:
a page claimed in batched writes, each conditioned on its own read, its mails on one SMTP
connection, its attempts recorded in batched writes. Whatever races it, each notice goes out
exactly once."""

from __future__ import annotations

import smtplib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.integrations import smtp
from shared.notify import service
from shared.platform import clock
from tests import counted
from tests import notify_support as ns
from tests.support import Api, User

pytest_plugins = ("tests.notify_fixtures",)  # mail


def _due(users: list[User], per_user: int, *, first_plan: bool = False) -> list[str]:
    """`per_user` payment notices for each user, all due now: planned by their trigger and
    then waiting for the sweep (or, `first_plan`, put back as the outbox wrote them)."""
    later_on = datetime.now(UTC) + timedelta(hours=1)
    ids = [
        ns.queue(user, "payment_received", {**ns.PAYMENT, "orderId": f"o-{n}"}, not_before=later_on)
        for n in range(per_user)
        for user in users
    ]
    for notice_id in ids:
        ns.settled(notice_id)
        (ns.unannounced if first_plan else ns.later)(notice_id)
    return ids


def _drain() -> None:
    """Whatever earlier tests left due goes first, so that a sweep measured here meets only
    this test's notices."""
    while service.sweep(limit=500).examined:
        pass


def _connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every SMTP connection this process opens from now on."""
    opened: list[tuple[str, int]] = []
    real = smtplib.SMTP.connect

    def connect(self: smtplib.SMTP, host: str = "localhost", port: int = 0, **kw: Any) -> Any:
        opened.append((host, port))
        return real(self, host, port, **kw)

    monkeypatch.setattr(smtplib.SMTP, "connect", connect)
    return opened


def test_concurrent_sweeps_and_an_api_sweep_send_each_of_many_notices_exactly_once(
    stack, mail, admin: Api
):
    users = [ns.recipient(stack) for _ in range(6)]
    ids = _due(users, 5)

    def sweep(n: int) -> int:
        if n % 3 == 2:  # another instance's sweep, through the function
            response = admin.post("/notifications/sweep", params={"limit": 12})
            assert response.status_code == 200, response.text
            return int(response.json()["delivered"])
        return service.sweep(limit=12).delivered

    with ThreadPoolExecutor(max_workers=6) as pool:
        delivered = sum(pool.map(sweep, range(6)))
        while any(ns.notice(i)["status"] != "done" for i in ids):
            delivered += sum(pool.map(sweep, range(3)))

    assert delivered >= len(ids)  # (and whatever else was due meanwhile)
    for user in users:
        mails = mail.wait(user.email, 5)
        assert len(mails) == 5
        assert len({m["messageId"] for m in mails}) == 5
    for notice_id in ids:
        doc = ns.notice(notice_id)
        assert doc["outcome"] == "sent"
        assert [a["outcome"] for a in doc["history"]] == ["sent"]
        assert ns.channel(notice_id, "email")["attempts"] == 1
    for user in users:
        assert len(mail.messages(user.email)) == 5


def test_a_sweep_asks_firestore_a_few_requests_not_a_few_per_notice(stack, mail):
    users = [ns.recipient(stack) for _ in range(3)]
    _drain()
    ids = _due(users, 10, first_plan=True)  # their first plan: profiles, preferences, ...

    with counted.counting_calls() as counters:
        result = service.sweep(limit=500)
    counts = counters.snapshot()

    assert result.examined == result.sent == len(ids)
    requests = sum(v for k, v in counts.items() if k.startswith("firestore.call."))
    assert requests <= 10, counts  # a query, reads, claims and records in batches
    # Each notice read once by the query, claimed by one write and recorded by another; each
    # user's access record (erased?), profile, preferences and address suppression read once;
    # one query for devices.
    assert counts["firestore.writes"] == 2 * len(ids), counts
    assert counts["firestore.reads"] <= len(ids) + 4 * len(users) + 1, counts
    assert counted.operations(counts) / len(ids) < 3.5
    for user in users:
        assert len(mail.wait(user.email, 10)) == 10


def test_a_sweep_sends_on_one_connection_through_refusals(stack, mail, monkeypatch):
    bounced, refused, fine = ns.recipient(stack), ns.recipient(stack), ns.recipient(stack)
    mail.fault(bounced.email, 550)
    mail.fault(refused.email, 554, stage="data")
    _drain()
    ids = _due([bounced, refused, fine], 2)
    opened = _connections(monkeypatch)

    service.sweep(limit=500)

    assert len(opened) == 1
    outcomes = Counter(ns.channel(i, "email")["state"] for i in ids)
    # 550: the address is suppressed, and the second mail to it waits, unsent, to be judged
    # again; 554 once: the second goes.
    assert outcomes == {"sent": 3, "failed": 2, "retry": 1}
    assert len(mail.messages(fine.email)) == 2
    assert len(mail.messages(refused.email)) == 1
    assert mail.messages(bounced.email) == []


def test_a_421_closes_the_connection_and_the_next_mail_opens_another(stack, mail, monkeypatch):
    busy, fine = ns.recipient(stack), ns.recipient(stack)
    mail.fault(busy.email, 421)
    _drain()
    ids = _due([busy, fine], 1)
    opened = _connections(monkeypatch)

    service.sweep(limit=500)

    assert len(opened) == 2
    assert "421" in ns.channel(ids[0], "email")["lastError"]
    assert ns.channel(ids[1], "email")["state"] == "sent"
    assert len(mail.messages(fine.email)) == 1


def test_a_connection_dropped_between_two_mails_is_opened_again_and_nothing_is_lost(stack, mail):
    first, second = ns.recipient(stack), ns.recipient(stack)
    relay = service._relay()

    def message(to: str) -> smtp.Mail:
        return smtp.Mail("noreply@alodoktor.test", to, "Hello", "Hi.", "<p>Hi.</p>", f"<{to}>")

    with relay.session() as session:
        assert session.send(message(first.email)).accepted
        assert session._smtp is not None
        session._smtp.sock.close()  # the relay's idle timeout, say
        answer = session.send(message(second.email))
    assert answer.accepted
    assert not answer.lost
    assert len(mail.messages(first.email)) == len(mail.messages(second.email)) == 1


def test_a_bounce_holds_the_sweeps_next_mail_to_that_address_until_it_is_judged_again(
    stack, mail, admin: Api
):
    user = ns.recipient(stack)
    mail.fault(user.email, 550)  # once: a second try would be taken
    _drain()
    first, second = _due([user], 2)

    service.sweep(limit=500)

    assert ns.channel(first, "email")["state"] == "failed"
    held = ns.channel(second, "email")
    assert (held["state"], held["attempts"]) == ("retry", 0)
    assert ns.notice(second).get("history") in (None, [])  # not an attempt
    ns.later(second)
    service.sweep(limit=500)
    skipped = ns.channel(second, "email")
    assert (skipped["state"], skipped["reason"]) == ("skipped", "suppressed")
    assert mail.messages(user.email) == []


def test_a_mail_whose_lease_is_half_gone_is_given_back_unsent(stack, mail, monkeypatch):
    user = ns.recipient(stack)
    _drain()
    (notice_id,) = _due([user], 1)
    real_now, claim_all = clock.now, service._claim_all
    lease = timedelta(seconds=service.settings.get().notify_lease_seconds)

    def slow_claims(*args: Any) -> Any:
        claimed = claim_all(*args)
        # From here the sweep's clock runs 0.6 leases ahead, as behind a long page of slow
        # sends.
        monkeypatch.setattr(clock, "now", lambda: real_now() + lease * 0.6)
        return claimed

    monkeypatch.setattr(service, "_claim_all", slow_claims)
    service.sweep(limit=500)
    monkeypatch.undo()

    given_back = ns.notice(notice_id)
    email = given_back["channels"]["email"]
    assert (email["state"], email["attempts"]) == ("retry", 0)
    assert (given_back["status"], given_back["lease"]) == ("pending", None)
    assert mail.messages(user.email) == []
    ns.later(notice_id)
    service.sweep(limit=500)
    assert len(mail.wait(user.email)) == 1
    assert ns.channel(notice_id, "email")["attempts"] == 1

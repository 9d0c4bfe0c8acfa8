"""The pure rules of notify, without emulators: states, backoff, failure classes, preferences,
quiet hours across midnight and DST changes, unsubscribe tokens, analytics arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.notify import rules
from shared.notify.rules import (
    Category,
    Channel,
    Outcome,
    Preferences,
    Result,
    State,
)

NOW = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
KEY = b"test-signing-key"


# -- backoff and failures ------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=40), st.text(max_size=20))
def test_backoff_stays_in_the_upper_half_of_a_doubling_capped_ceiling(attempt, seed):
    delay = rules.retry_delay(attempt, seed).total_seconds()
    ceiling = min(rules.MAX_RETRY_SECONDS, rules.BASE_RETRY_SECONDS * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_jittered_across_notices_and_reproducible_for_one():
    delays = {rules.retry_delay(3, f"notice-{i}:email") for i in range(50)}
    assert len(delays) > 40  # notices failing together do not come back together
    assert rules.retry_delay(3, "n:email") == rules.retry_delay(3, "n:email")
    assert rules.retry_delay(1, "n", retry_after=600) == timedelta(seconds=600)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, Outcome.SENT),
        (421, Outcome.TEMPORARY),
        (450, Outcome.TEMPORARY),
        (452, Outcome.TEMPORARY),
        (550, Outcome.PERMANENT),
        (554, Outcome.PERMANENT),
    ],
)
def test_smtp_4xx_is_temporary_and_5xx_permanent(code, outcome):
    assert rules.smtp_outcome(code) is outcome


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Outcome.SENT),
        (429, Outcome.TEMPORARY),
        (500, Outcome.TEMPORARY),
        (503, Outcome.TEMPORARY),
        (401, Outcome.TEMPORARY),
        (400, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
    ],
)
def test_twilio_429_and_5xx_are_temporary(status, outcome):
    assert rules.twilio_outcome(status) is outcome


def test_fcm_unregistered_is_permanent_and_quota_temporary():
    assert rules.fcm_outcome("UNREGISTERED") is Outcome.PERMANENT
    assert rules.fcm_outcome("INVALID_ARGUMENT") is Outcome.PERMANENT
    assert rules.fcm_outcome("QUOTA_EXCEEDED") is Outcome.TEMPORARY
    assert rules.fcm_outcome("UNAVAILABLE") is Outcome.TEMPORARY


def _sending(attempts: int) -> dict[str, object]:
    return {"state": "sending", "attempts": attempts, "nextAt": None}


def test_an_attempt_moves_a_channel_to_sent_retry_or_failed():
    sent = rules.after_attempt(_sending(1), Result(Outcome.SENT, provider_id="SM1"), NOW, "s")
    assert (sent["state"], sent["providerId"], sent["sentAt"]) == ("sent", "SM1", NOW)

    retry = rules.after_attempt(_sending(2), Result(Outcome.TEMPORARY, "421"), NOW, "s")
    assert retry["state"] == "retry"
    assert retry["nextAt"] == NOW + rules.retry_delay(2, "s")
    assert retry["lastError"] == "421"

    lost = rules.after_attempt(_sending(1), Result(Outcome.UNKNOWN, "timeout"), NOW, "s")
    assert (lost["state"], lost["unknown"]) == ("retry", True)

    failed = rules.after_attempt(_sending(1), Result(Outcome.PERMANENT, "550"), NOW, "s")
    assert (failed["state"], failed["nextAt"]) == ("failed", None)

    spent = rules.after_attempt(
        _sending(rules.MAX_ATTEMPTS), Result(Outcome.TEMPORARY, "421"), NOW, "s"
    )
    assert spent["state"] == "failed"


def test_the_state_machine_refuses_moves_it_does_not_have():
    rules.check_transition(State.PENDING, State.SENDING)
    rules.check_transition(State.SENDING, State.SENDING)  # a lease taken over
    rules.check_transition(State.FAILED, State.RETRY)  # an admin's retry
    for current, target in [
        (State.SENT, State.SENDING),
        (State.CANCELLED, State.SENDING),
        (State.PENDING, State.SENT),
        (State.FAILED, State.SENT),
    ]:
        with pytest.raises(rules.TransitionRefused):
            rules.check_transition(current, target)


def test_due_channels_are_waiting_ones_whose_time_came_and_those_of_a_lease_that_ran_out():
    doc = {
        "lease": {"id": "l1", "until": NOW - timedelta(seconds=1)},
        "channels": {
            "email": {"state": "retry", "nextAt": NOW - timedelta(seconds=5)},
            "sms": {"state": "sending"},
            "push": {"state": "pending", "nextAt": NOW + timedelta(hours=1)},
        },
    }
    assert rules.due_channels(doc, NOW) == [Channel.EMAIL, Channel.SMS]
    held = {**doc, "lease": {"id": "l1", "until": NOW + timedelta(seconds=30)}}
    assert rules.due_channels(held, NOW) == [Channel.EMAIL]


def test_a_notices_summary_and_outcome():
    later = NOW + timedelta(minutes=5)
    assert rules.summary({"email": {"state": "sending"}}) == (rules.Notice.SENDING, None)
    assert rules.summary(
        {"email": {"state": "sent"}, "sms": {"state": "retry", "nextAt": later}}
    ) == (rules.Notice.PENDING, later)
    assert rules.summary({"email": {"state": "sent"}, "sms": {"state": "failed"}})[0] == "done"
    assert rules.outcome_of({"email": {"state": "sent"}, "sms": {"state": "failed"}}) == "partial"
    assert rules.outcome_of({"email": {"state": "skipped"}}) == "skipped"
    assert rules.outcome_of({"email": {"state": "failed"}}) == "failed"


# -- preferences and quiet hours -----------------------------------------------------------

EVERYWHERE = {Channel.EMAIL: True, Channel.SMS: True, Channel.PUSH: True}


def _plan(kind: str, prefs: Preferences, now: datetime = NOW, **kw: object) -> dict:
    return rules.plan(rules.KINDS[kind], prefs, EVERYWHERE, frozenset(), now, **kw)  # type: ignore[arg-type]


def test_opt_outs_apply_per_category_and_channel_but_not_to_security_or_account_notices():
    prefs = Preferences.from_doc(
        {
            "channels": {
                "payments": {"email": False},
                "security": {"email": False},
                "account": {"push": False},
            }
        }
    )
    paid = _plan("payment_received", prefs)
    assert paid[Channel.EMAIL].state is State.SKIPPED
    assert paid[Channel.EMAIL].reason == "opted_out"
    assert paid[Channel.PUSH].state is State.PENDING
    assert _plan("password_reset", prefs)[Channel.EMAIL].state is State.PENDING
    assert _plan("approval_decided", prefs)[Channel.PUSH].state is State.PENDING


def test_no_address_or_a_suppressed_one_skips_the_channel():
    kind = rules.KINDS["booking_accepted"]
    reach = {Channel.EMAIL: True, Channel.SMS: False, Channel.PUSH: True}
    plans = rules.plan(kind, Preferences(), reach, frozenset({Channel.EMAIL}), NOW)
    assert plans[Channel.SMS].reason == "no_address"
    assert plans[Channel.EMAIL].reason == "suppressed"
    assert plans[Channel.PUSH].state is State.PENDING


def test_a_first_send_and_every_later_one_are_refused_by_the_one_rule():
    prefs = Preferences.from_doc({"channels": {"bookings": {"sms": False}}})
    reach = {Channel.EMAIL: True, Channel.SMS: True, Channel.PUSH: False}
    suppressed = frozenset({Channel.EMAIL})
    for name, kind in rules.KINDS.items():
        plans = rules.plan(kind, prefs, reach, suppressed, NOW)
        for channel in kind.channels:
            why = rules.refusal(kind, channel, prefs, reach, suppressed)
            assert plans[channel].reason == (why or plans[channel].reason), (name, channel)
            assert (plans[channel].state is State.SKIPPED) == (why is not None), (name, channel)
    booking = rules.KINDS["booking_accepted"]
    assert rules.refusal(booking, Channel.SMS, prefs, reach, suppressed) == "opted_out"
    assert rules.refusal(booking, Channel.PUSH, prefs, reach, suppressed) == "no_address"
    # A suppressed address stays suppressed even for notices that ignore opt-outs.
    reset = rules.KINDS["password_reset"]
    assert rules.refusal(reset, Channel.EMAIL, prefs, reach, suppressed) == "suppressed"
    assert rules.refusal(reset, Channel.EMAIL, prefs, reach, frozenset()) is None


def _quiet(zone: str, start: str, end: str) -> Preferences:
    return Preferences.from_doc({"timeZone": zone, "quietHours": {"start": start, "end": end}})


def test_quiet_hours_across_midnight_hold_a_reminder_until_they_end_locally():
    prefs = _quiet("Europe/Istanbul", "22:00", "07:00")  # UTC+3
    before_midnight = datetime(2031, 6, 1, 20, 30, tzinfo=UTC)  # 23:30 local
    after_midnight = datetime(2031, 6, 1, 23, 30, tzinfo=UTC)  # 02:30 local
    daytime = datetime(2031, 6, 1, 9, 0, tzinfo=UTC)  # 12:00 local
    for now in (before_midnight, after_midnight):
        held = _plan("appointment_reminder", prefs, now)[Channel.SMS]
        assert held.state is State.PENDING
        assert held.reason == "quiet_hours"
        assert held.next_at == datetime(2031, 6, 2, 4, 0, tzinfo=UTC)  # 07:00 local
    assert _plan("appointment_reminder", prefs, daytime)[Channel.SMS].next_at == daytime
    # Security notices do not wait.
    assert _plan("password_reset", prefs, after_midnight)[Channel.EMAIL].next_at == after_midnight


def test_quiet_hours_ending_inside_the_spring_forward_gap_end_after_it():
    prefs = _quiet("America/New_York", "23:00", "02:30")  # 02:30 does not exist on 9 March
    now = datetime(2031, 3, 9, 5, 0, tzinfo=UTC)  # 00:00 EST
    end = _plan("appointment_reminder", prefs, now)[Channel.EMAIL].next_at
    assert end == datetime(2031, 3, 9, 7, 30, tzinfo=UTC)  # 03:30 EDT: just after the gap
    assert end.astimezone(ZoneInfo("America/New_York")).hour == 3


def test_quiet_hours_ending_in_the_fall_back_fold_end_at_its_first_occurrence():
    prefs = _quiet("America/New_York", "00:00", "01:30")  # 01:30 happens twice on 2 November
    now = datetime(2031, 11, 2, 4, 30, tzinfo=UTC)  # 00:30 EDT
    end = _plan("appointment_reminder", prefs, now)[Channel.EMAIL].next_at
    assert end == datetime(2031, 11, 2, 5, 30, tzinfo=UTC)  # 01:30 EDT, the first one
    assert rules.quiet_until(end, "America/New_York", time(0), time(1, 30)) is None


def test_a_reminder_is_planned_for_its_time_and_quiet_hours_are_judged_then():
    prefs = _quiet("UTC", "22:00", "06:00")
    at_night = datetime(2031, 6, 1, 23, 0, tzinfo=UTC)
    plans = _plan("appointment_reminder", prefs, NOW, not_before=at_night)
    assert plans[Channel.EMAIL].next_at == datetime(2031, 6, 2, 6, 0, tzinfo=UTC)
    daytime = datetime(2031, 6, 1, 15, 0, tzinfo=UTC)
    assert (
        _plan("appointment_reminder", prefs, NOW, not_before=daytime)[Channel.EMAIL].next_at
        == daytime
    )


def test_unreadable_preferences_fall_back_to_defaults():
    prefs = Preferences.from_doc(
        {
            "locale": "de-DE",
            "timeZone": "Mars/Olympus",
            "quietHours": {"start": "25:00", "end": 7},
            "channels": {"nonsense": {"email": False}, "payments": {"fax": False}},
        }
    )
    assert prefs == Preferences()


def test_locales_fall_back_to_the_language_then_english():
    assert rules.locale_of("tr-TR") == "tr"
    assert rules.locale_of("tr") == "tr"
    assert rules.locale_of("de") == "en"
    assert rules.locale_of(None) == "en"


# -- unsubscribe tokens --------------------------------------------------------------------


def test_an_unsubscribe_token_names_its_user_and_category_until_it_expires():
    token = rules.unsubscribe_token(KEY, "u1", Category.PAYMENTS, NOW + timedelta(days=60))
    assert rules.read_unsubscribe_token(KEY, token, NOW) == ("u1", Category.PAYMENTS)
    with pytest.raises(rules.TokenRefused) as expired:
        rules.read_unsubscribe_token(KEY, token, NOW + timedelta(days=61))
    assert expired.value.code == "unsubscribe_token_expired"


@given(st.integers(min_value=0, max_value=200), st.sampled_from("AbZ09_-."))
def test_any_change_to_a_token_is_refused(position, char):
    token = rules.unsubscribe_token(KEY, "u1", Category.REMINDERS, NOW + timedelta(days=1))
    position %= len(token)
    tampered = token[:position] + char + token[position + 1 :]
    if tampered == token:
        return
    with pytest.raises(rules.TokenRefused) as refused:
        rules.read_unsubscribe_token(KEY, tampered, NOW)
    assert refused.value.code == "unsubscribe_token_invalid"


def test_a_token_signed_with_another_key_or_no_key_is_refused():
    token = rules.unsubscribe_token(b"other", "u1", Category.PAYMENTS, NOW + timedelta(days=1))
    with pytest.raises(rules.TokenRefused):
        rules.read_unsubscribe_token(KEY, token, NOW)
    with pytest.raises(rules.TokenRefused):
        rules.read_unsubscribe_token(b"", token, NOW)


# -- the SMS lookup, analytics -------------------------------------------------------------


def test_the_lookup_finds_the_message_a_lost_answer_had_sent():
    def message(body: str, created: datetime, status: str = "queued") -> dict[str, str]:
        from email.utils import format_datetime

        return {"body": body, "date_created": format_datetime(created), "status": status}

    started = NOW
    older = message("Your booking", NOW - timedelta(minutes=10))
    failed = message("Your booking", NOW + timedelta(seconds=1), "failed")
    made = message("Your booking", NOW + timedelta(seconds=2))
    assert rules.matching_message([made, failed, older], "Your booking", started) is made
    assert rules.matching_message([failed, older], "Your booking", started) is None
    assert rules.matching_message([made], "Another text", started) is None


def test_a_days_dashboard_sums_its_shards():
    shards = [
        {
            "counts": {"appointment_booked": 3, "payment_captured": 2},
            "amounts": {"payment_captured": {"USD": 4000}},
        },
        {
            "counts": {"booking_requested": 1, "appointment_no_show": 1, "refund_completed": 1},
            "amounts": {"refund_completed": {"USD": 2000}, "payment_captured": {"EUR": 1500}},
        },
        {
            "counts": {"user_signed_up": 2, "payout_sent": 1},
            "amounts": {"payout_sent": {"EUR": 18000}},
        },
        {"counts": {"user_signed_up": 1}},
    ]
    day = rules.daily_summary("2031-06-01", shards)
    assert day["bookings"] == 4
    assert day["payments"] == 2
    assert day["revenueMinor"] == {"EUR": 1500, "USD": 4000}
    assert day["refunds"] == 1
    assert day["refundedMinor"] == {"USD": 2000}
    assert day["conversion"] == 0.5
    assert day["noShows"] == 1
    assert day["signUps"] == 3
    assert (day["payoutsSent"], day["paidOutMinor"]) == (1, {"EUR": 18000})
    empty = rules.daily_summary("2031-06-02", [])
    assert empty["conversion"] is None
    assert (empty["signUps"], empty["payoutsSent"], empty["paidOutMinor"]) == (0, 0, {})


def test_the_notify_function_reads_the_notice_id_from_the_event_and_nothing_else():
    from tests.functions_index import load

    notice_of = load("notify").notice_of
    created = "google.cloud.firestore.document.v1.created"
    assert notice_of({"type": created, "document": "notifications/n1"}) == "n1"
    assert notice_of({"type": created, "document": "users/u1"}) is None
    assert notice_of({"type": created, "document": "notifications/n1/attempts/a"}) is None
    assert notice_of({"type": created, "document": "notifications/__x__"}) is None
    assert notice_of({"type": "google.cloud.storage.object.v1.finalized"}) is None


def test_a_later_send_is_held_by_quiet_hours_as_a_first_send_is():
    """Every send judges quiet hours by one rule (`quiet_hold`): a backoff retry, an admin's
    retry or a reminder whose time came waits for their end, unless its category ignores
    them; the wait is no attempt."""
    prefs = _quiet("Europe/Istanbul", "22:00", "07:00")  # UTC+3
    night = datetime(2031, 6, 1, 23, 30, tzinfo=UTC)  # 02:30 local
    end = datetime(2031, 6, 2, 4, 0, tzinfo=UTC)  # 07:00 local
    for name, kind in rules.KINDS.items():
        first = rules.plan(kind, prefs, dict.fromkeys(Channel, True), frozenset(), night)
        later = rules.quiet_hold(kind, prefs, night)
        assert {p.next_at for p in first.values()} == {later or night}, name
        assert (later is None) == (kind.category in rules.IGNORES_QUIET_HOURS), name
    retry = {"state": "retry", "attempts": 2, "nextAt": night, "lastError": "421"}
    assert rules.held(retry, end) == {**retry, "nextAt": end, "reason": "quiet_hours"}
    # Left sending by a lease that ran out: it may have gone, so the next send looks first.
    crashed = {"state": "sending", "attempts": 3, "attemptStartedAt": night}
    waits = rules.held(crashed, end)
    assert (waits["state"], waits["nextAt"], waits["attempts"]) == ("retry", end, 3)
    assert (waits["unknown"], waits["lostAttemptAt"]) == (True, night)
    assert rules.quiet_hold(rules.KINDS["payment_received"], prefs, end) is None


def test_a_notice_of_an_erased_account_is_stopped_on_every_open_channel():
    kind = rules.KINDS["booking_declined"]
    never_planned = rules.stopped({}, kind, rules.RECIPIENT_ERASED)
    assert set(never_planned) == {c.value for c in kind.channels}
    assert {(c["state"], c["reason"]) for c in never_planned.values()} == {
        ("cancelled", "recipient_erased")
    }
    planned = {
        "email": {"state": "sent", "attempts": 1, "nextAt": None},
        "sms": {"state": "retry", "attempts": 1, "nextAt": NOW},
        "push": {"state": "skipped", "reason": "no_address", "nextAt": None},
    }
    stopped = rules.stopped(planned, kind, rules.RECIPIENT_ERASED)
    assert stopped["email"] == planned["email"]
    assert stopped["push"] == planned["push"]
    assert stopped["sms"] == {
        "state": "cancelled",
        "attempts": 1,
        "nextAt": None,
        "reason": "recipient_erased",
    }

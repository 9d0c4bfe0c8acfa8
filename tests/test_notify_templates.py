"""Every notice template, per kind and locale: it renders, it escapes, it refuses a missing
variable, and none of its variables is health data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2
import pytest
from jinja2 import meta

from shared.audit.rules import HEALTH_FIELDS
from shared.notify import rules, templates

SAMPLES: dict[str, dict[str, Any]] = {
    "set_password": {"link": "https://example.test/set?oob=1&x=2"},
    "password_reset": {"link": "https://example.test/reset?oob=1&x=2"},
    "approval_decided": {"approved": False, "reason": "Licence <unreadable>"},
    "payment_received": {"orderId": "o-1", "currency": "USD", "amount": "20.00"},
    "refund_completed": {"orderId": "o-1", "currency": "USD", "amount": "5.00", "refundId": "r"},
    "booking_accepted": {"bookingId": "b-1", "windowStart": datetime(2031, 1, 2, 9, tzinfo=UTC)},
    "booking_declined": {
        "bookingId": "b-1",
        "windowStart": datetime(2031, 1, 2, 9, tzinfo=UTC),
        "reason": "Fully booked",
    },
    "appointment_reminder": {"appointmentId": "a-1", "start": datetime(2031, 1, 2, 9, tzinfo=UTC)},
    "payout_sent": {"payoutId": "p-1", "currency": "EUR", "amount": "180.00"},
    "payout_returned": {
        "payoutId": "p-1",
        "currency": "EUR",
        "amount": "9.00",
        "reason": "returned",
    },
    "payout_unclaimed": {
        "payoutId": "p-1",
        "currency": "EUR",
        "amount": "9.00",
        "receiver": "dr@example.test",
    },
    "payout_address_code": {"code": "492113"},
    "payout_address_changed": {
        "receiver": "dr@example.test",
        "recipientType": "EMAIL",
        "coolingOffUntil": "2031-01-04T09:00:00+00:00",
    },
    "payout_alert": {"alert": "payout_reversed", "message": "PayPal took back payout p-1."},
    "audit_alert": {"where": "entry 2031-01-02T09:00:00.000000Z-ab12", "reason": "hash mismatch"},
    "erasure_requested": {
        "requestId": "r-1",
        "eraseAfter": "2031-01-16T09:00:00+00:00",
        "cancelUrl": "https://app.example.test/?erasure=cancel&request=r-1",
    },
}
CASES = [(kind, locale) for kind in sorted(rules.KINDS) for locale in rules.LOCALES]


def test_every_kind_has_a_sample_here():
    assert set(SAMPLES) == set(rules.KINDS)


@pytest.mark.parametrize(("kind", "locale"), CASES)
def test_every_kind_has_text_and_html_in_every_locale(kind, locale):
    assert (templates.TEMPLATES / locale / f"{kind}.txt").is_file()
    assert (templates.TEMPLATES / locale / f"{kind}.html").is_file()


@pytest.mark.parametrize(("kind", "locale"), CASES)
def test_every_template_renders_its_kinds_data(kind, locale):
    rendered = templates.render(
        kind, locale, SAMPLES[kind], name="Zeynep", unsubscribe_url="https://x.test/u?t=a&b=c"
    )
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert "Zeynep" in rendered.html
    if kind != "payout_address_code":  # to an address, not yet the account's: no name
        assert "Zeynep" in rendered.text
    assert rendered.html.lstrip().startswith("<!doctype html>")
    channels = rules.KINDS[kind].channels
    assert bool(rendered.sms) == (rules.Channel.SMS in channels)
    assert bool(rendered.push_body) == (rules.Channel.PUSH in channels)


def _variables(name: str) -> set[str]:
    env = templates.environment()
    source = env.loader.get_source(env, name)[0]
    found = set(meta.find_undeclared_variables(env.parse(source)))
    for parent in meta.find_referenced_templates(env.parse(source)):
        if parent:
            found |= _variables(parent)
    return found


@pytest.mark.parametrize(("kind", "locale"), CASES)
def test_a_template_uses_only_its_kinds_variables_and_no_health_field(kind, locale):
    used = _variables(f"{locale}/{kind}.txt") | _variables(f"{locale}/{kind}.html")
    allowed = rules.KINDS[kind].variables | templates.COMMON
    assert used <= allowed, f"undeclared: {sorted(used - allowed)}"
    assert not used & HEALTH_FIELDS


def test_no_kind_declares_a_health_field_and_the_context_drops_everything_else():
    for kind in rules.KINDS.values():
        assert not kind.variables & HEALTH_FIELDS
    data = {**SAMPLES["payment_received"], "note": "chest pain", "diagnosis": "x"}
    context = templates.context_for(
        rules.KINDS["payment_received"], data, name="A", unsubscribe_url=None
    )
    assert not set(context) & HEALTH_FIELDS


@pytest.mark.parametrize("kind", sorted(rules.KINDS))
def test_a_missing_variable_is_refused_not_rendered_empty(kind):
    wanted = _variables(f"en/{kind}.txt") & (
        rules.KINDS[kind].variables - rules.KINDS[kind].optional
    )
    for missing in sorted(wanted):
        data = {k: v for k, v in SAMPLES[kind].items() if k != missing}
        with pytest.raises(jinja2.UndefinedError):
            templates.render(kind, "en", data, name="A")


def test_html_is_escaped_in_the_html_part_only():
    data = {"approved": False, "reason": "<b>no</b> & <script>x()</script>"}
    rendered = templates.render("approval_decided", "en", data, name="<i>Ann</i>")
    assert "&lt;script&gt;x()&lt;/script&gt;" in rendered.html
    assert "&lt;i&gt;Ann&lt;/i&gt;" in rendered.html
    assert "<script>" not in rendered.html
    assert "<b>no</b> & <script>x()</script>" in rendered.text


def test_an_optional_variable_may_be_left_out():
    data = {"alert": "payouts_in_transit_mismatch", "message": "In transit: 10.00 EUR too much."}
    rendered = templates.render("payout_alert", "en", data, name="Admin")
    assert "payout None" not in rendered.text
    assert rendered.text.rstrip().endswith("Alert: payouts_in_transit_mismatch.")


def test_a_locale_without_templates_falls_back_to_english():
    rendered = templates.render("payment_received", "de", SAMPLES["payment_received"], name="A")
    assert rendered.subject == "Payment received: 20.00 USD"


def test_times_are_shown_in_the_recipients_zone_and_locale():
    data = SAMPLES["appointment_reminder"]
    en = templates.render("appointment_reminder", "en", data, name="A", time_zone="Asia/Jakarta")
    tr = templates.render("appointment_reminder", "tr", data, name="A", time_zone="Europe/Istanbul")
    assert "02 Jan 2031, 16:00 (Asia/Jakarta)" in en.text
    assert "02.01.2031 12:00 (Europe/Istanbul)" in tr.text

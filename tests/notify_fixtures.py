"""The notify tests' fixtures (`pytest_plugins = ("tests.notify_fixtures",)` in a test module):
the stack's SMTP sink, Twilio and FCM simulators, each left clean, and a test that broke
Twilio's or FCM's contract fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.notify_support import Mail, Push, Sms, _call


@pytest.fixture
def mail(stack: Any) -> Iterator[Mail]:
    m = Mail(stack.mail_url)
    yield m
    _call("DELETE", f"{m.url}/_sim/faults")
    m.up()


def _no_violations(url: str, what: str) -> None:
    left = _call("DELETE", f"{url}/_sim/violations")["violations"]
    assert left == [], f"{what} contract violations: {left}"


@pytest.fixture
def sms(stack: Any) -> Iterator[Sms]:
    """The Twilio simulator; a test fails if Twilio's contract was broken during it."""
    s = Sms(stack.twilio_url)
    _no_violations(s.url, "Twilio (left by an earlier test)")
    yield s
    _call("DELETE", f"{s.url}/_sim/faults")
    _no_violations(s.url, "Twilio")


@pytest.fixture
def push(stack: Any) -> Iterator[Push]:
    """The FCM simulator; a test fails if a request broke FCM v1's message shape."""
    p = Push(stack.fcm_url)
    _no_violations(p.url, "FCM (left by an earlier test)")
    yield p
    _call("DELETE", f"{p.url}/_sim/tokens")
    _no_violations(p.url, "FCM")

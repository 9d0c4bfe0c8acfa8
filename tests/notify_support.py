"""Helpers for the notify tests: the SMTP sink, the Twilio and FCM simulators, and notices.

Every simulator is a real server of the stack; these are thin HTTP clients of their test-only
`/_sim/` controls. The `sms` and `push` fixtures fail a test that broke Twilio's or FCM's
contract, as the `sim` fixture does for PayPal's (tests/notify_fixtures.py; a test module
takes them with `pytest_plugins = ("tests.notify_fixtures",)`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from shared.identity import profiles
from shared.notify import service
from shared.platform import clients, outbox, store
from shared.platform.context import Role
from tests.support import User, create_user, eventually


def _call(method: str, url: str, **kw: Any) -> Any:
    response = requests.request(method, url, timeout=30, **kw)
    response.raise_for_status()
    return response.json()


@dataclass
class Mail:
    url: str

    def messages(self, to: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _call("GET", f"{self.url}/_sim/messages", params={"to": to})[
            "messages"
        ]
        return found

    def wait(self, to: str, count: int = 1) -> list[dict[str, Any]]:
        return eventually(lambda: self.messages(to), lambda m: len(m) >= count, f"mail to {to}")

    def fault(self, to: str, code: int, *, stage: str = "rcpt", count: int | None = 1) -> None:
        _call(
            "POST",
            f"{self.url}/_sim/faults",
            json={"to": to, "code": code, "stage": stage, "count": count},
        )

    def down(self) -> None:
        _call("POST", f"{self.url}/_sim/down")

    def up(self) -> None:
        _call("POST", f"{self.url}/_sim/up")


@dataclass
class Sms:
    url: str

    def messages(self, to: str) -> list[dict[str, Any]]:
        every: list[dict[str, Any]] = _call("GET", f"{self.url}/_sim/messages")["messages"]
        return [m for m in every if m["to"] == to]

    def fault(self, to: str, **spec: Any) -> None:
        _call("POST", f"{self.url}/_sim/faults", json={"to": to, **spec})

    def callbacks(self, sid: str) -> list[dict[str, Any]]:
        every: list[dict[str, Any]] = _call("GET", f"{self.url}/_sim/callbacks")["callbacks"]
        return [c for c in every if c["params"]["MessageSid"] == sid]


@dataclass
class Push:
    url: str

    def messages(self, token: str) -> list[dict[str, Any]]:
        every: list[dict[str, Any]] = _call("GET", f"{self.url}/_sim/messages")["messages"]
        return [m["message"] for m in every if m["message"].get("token") == token]

    def rule(self, token: str, error: str, count: int | None = 1) -> None:
        _call(
            "POST", f"{self.url}/_sim/tokens", json={"token": token, "error": error, "count": count}
        )


# -- recipients and notices ----------------------------------------------------------------


def phone_number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def recipient(
    stack: Any,
    *,
    name: str = "Deniz Kaya",
    phone: str | None = None,
    role: Role = Role.PATIENT,
    prefs: dict[str, Any] | None = None,
) -> User:
    """A user with a display name (and a phone number, and stored preferences, if given)."""
    user = create_user(stack, role)
    profile: dict[str, Any] = {"displayName": name}
    if phone:
        profile["phone"] = phone
    store.update(profiles.ref(user.uid), profile, by="test")
    if prefs is not None:
        store.set(service.preferences_ref(user.uid), {"uid": user.uid, **prefs}, by="test")
    return user


def queue(
    user: User,
    kind: str,
    data: dict[str, Any],
    *,
    notice_id: str | None = None,
    not_before: datetime | None = None,
) -> str:
    """Queue a notice as a feature does (its own commit); returns its id."""
    notice_id = notice_id or f"test-{uuid.uuid4().hex}"
    batch = clients.db().batch()
    outbox.queue(
        batch, user.uid, user.email, kind, data, "test", notice_id=notice_id, not_before=not_before
    )
    batch.commit()
    return notice_id


PAYMENT = {"orderId": "order-1", "currency": "USD", "amount": "20.00"}


def notice(notice_id: str) -> dict[str, Any]:
    doc = service.get_notice(notice_id)
    assert doc is not None, notice_id
    return doc


def channel(notice_id: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = (notice(notice_id).get("channels") or {}).get(name) or {}
    return found


def settled(notice_id: str) -> dict[str, Any]:
    """The notice once no channel of it is being sent."""
    return eventually(
        lambda: notice(notice_id),
        lambda d: d.get("status") not in (None, "queued", "sending"),
        f"notice {notice_id} settles",
    )


def channel_state(notice_id: str, name: str, state: str) -> dict[str, Any]:
    return eventually(
        lambda: channel(notice_id, name),
        lambda c: c.get("state") == state,
        f"{name} of {notice_id} is {state}",
    )


def unannounced(notice_id: str) -> None:
    """Put the notice back as the outbox wrote it, due now, as if its event had never come
    (an update: the relay announces creations only)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    store.update(
        service.notices().document(notice_id),
        {
            "status": "queued",
            "channels": None,
            "recipient": None,
            "dueAt": past,
            "notBefore": None,
        },
        by="test",
    )


def later(notice_id: str) -> None:
    """Time passes for one notice: what it waits for (a retry, quiet hours, a lease) is due.
    The test moves the notice's clock, never the test's."""
    doc = notice(notice_id)
    past = datetime.now(UTC) - timedelta(seconds=1)
    channels = {
        name: ({**c, "nextAt": past} if c.get("nextAt") else c)
        for name, c in (doc.get("channels") or {}).items()
    }
    update: dict[str, Any] = {"dueAt": past, "channels": channels}
    if doc.get("notBefore"):
        update["notBefore"] = past
    if doc.get("lease"):
        update["lease"] = {**doc["lease"], "until": past}
    store.update(service.notices().document(notice_id), update, by="test")

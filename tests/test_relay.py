"""The relay without emulators: old values from its memory of each document, and retries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from dev import relay
from shared.audit import events as firestore_events

T0 = datetime(2026, 5, 1, tzinfo=UTC)


class Snap:
    def __init__(self, path: str, data: dict[str, Any], minute: int) -> None:
        self.reference = SimpleNamespace(path=path)
        self.data = data
        self.create_time = T0
        self.update_time = T0 + timedelta(minutes=minute)

    def to_dict(self) -> dict[str, Any]:
        return self.data


def _change(kind: str, snap: Snap) -> Any:
    return SimpleNamespace(type=SimpleNamespace(name=kind), document=snap)


def _relay(posted: list[tuple[str, relay.Event]], results: list[bool] | None = None) -> Any:
    def post(function: str, event: relay.Event) -> bool:
        posted.append((function, event))
        return results.pop(0) if results else True

    return relay.Relay("demo-alodoktor", "http://gateway.invalid", workers=0, post=post)


def _parsed(event: relay.Event) -> Any:
    attributes = {k.removeprefix("ce-"): v for k, v in event.headers.items() if k[:3] == "ce-"}
    return firestore_events.parse(attributes, event.body)


def test_old_values_come_from_the_last_state_seen_and_the_baseline_makes_no_event():
    r = _relay([])
    r._baselines["users"] = baseline = threading.Event()
    listener = r._listener("users")
    listener([Snap("users/a", {"n": 0}, 0)], [], T0)  # the initial snapshot
    assert baseline.is_set()
    assert r._queue.empty()

    listener([], [_change("MODIFIED", Snap("users/a", {"n": 1}, 1))], T0)
    listener([], [_change("ADDED", Snap("users/b", {"n": 5}, 2))], T0)
    listener([], [_change("REMOVED", Snap("users/a", {"n": 1}, 1))], T0 + timedelta(minutes=3))

    changes = [_parsed(r._queue.get_nowait()[1]) for _ in range(3)]
    assert [(c.path, c.action, c.before, c.after) for c in changes] == [
        ("users/a", "update", {"n": 0}, {"n": 1}),
        ("users/b", "create", None, {"n": 5}),
        ("users/a", "delete", {"n": 1}, None),
    ]
    assert changes[2].at == T0 + timedelta(minutes=3)  # a delete happens at the read time
    assert len({c.event_id for c in changes}) == 3


def test_a_failed_post_is_retried_until_it_is_taken(monkeypatch):
    monkeypatch.setattr(relay, "RETRY_DELAYS", (0, 0, 0))
    posted: list[tuple[str, relay.Event]] = []
    r = _relay(posted, [False, False, True])
    event = relay.cloud_event("p", "users/a", None, Snap("users/a", {}, 0), T0)
    assert r.deliver("audit-trigger", event) is True
    assert [e.id for _, e in posted] == [event.id] * 3  # the same event, at least once

    posted.clear()
    r = _relay(posted, [False] * 10)
    assert r.deliver("audit-trigger", event) is False
    assert len(posted) == 4

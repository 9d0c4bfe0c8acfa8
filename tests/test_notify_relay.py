"""The relay as notify's Eventarc trigger, without emulators: creations of notices only, as
`document.v1.created`; the audit trigger still gets every write of them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from dev import relay

T0 = datetime(2031, 5, 1, tzinfo=UTC)


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


def test_notify_gets_each_new_notice_once_as_a_created_event_and_nothing_else():
    r = relay.Relay("demo-alodoktor", "http://gateway.invalid", workers=0, post=lambda f, e: True)
    r._baselines["notifications"] = threading.Event()
    listener = r._listener("notifications")
    listener([Snap("notifications/old", {"status": "queued"}, 0)], [], T0)  # baseline: no event

    listener([], [_change("ADDED", Snap("notifications/n1", {"status": "queued"}, 1))], T0)
    listener([], [_change("MODIFIED", Snap("notifications/n1", {"status": "done"}, 2))], T0)
    listener([], [_change("MODIFIED", Snap("notifications/old", {"status": "done"}, 3))], T0)
    listener([], [_change("REMOVED", Snap("notifications/n1", {"status": "done"}, 2))], T0)

    queued = []
    while not r._queue.empty():
        queued.append(r._queue.get_nowait())
    to_notify = [e for f, e in queued if f == "notify"]
    assert len(to_notify) == 1
    assert to_notify[0].headers["ce-type"] == "google.cloud.firestore.document.v1.created"
    assert to_notify[0].headers["ce-document"] == "notifications/n1"
    audited = [e for f, e in queued if f == "audit-trigger"]
    assert len(audited) == 4  # the audit log still sees every write
    assert {e.headers["ce-type"] for e in audited} == {relay.EVENT_TYPE}


def test_the_notify_function_reads_the_notice_id_from_the_event_and_nothing_else():
    from tests.functions_index import load

    notice_of = load("notify").notice_of
    created = "google.cloud.firestore.document.v1.created"
    assert notice_of({"type": created, "document": "notifications/n1"}) == "n1"
    assert notice_of({"type": created, "document": "users/u1"}) is None
    assert notice_of({"type": created, "document": "notifications/n1/attempts/a"}) is None
    assert notice_of({"type": created, "document": "notifications/__x__"}) is None
    assert notice_of({"type": "google.cloud.storage.object.v1.finalized"}) is None

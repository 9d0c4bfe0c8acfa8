"""The relay without emulators: what the Firestore emulator posts becomes the event Eventarc
sends, on the lane of the trigger's function; the triggers are Terraform's; failed posts are
retried."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dev import relay
from shared.audit import events as firestore_events
from shared.audit.rules import AUDITED_COLLECTIONS

T0 = datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


class Snap:
    def __init__(self, path: str, data: dict[str, Any], minute: int) -> None:
        self.reference = SimpleNamespace(path=path)
        self.data = data
        self.create_time = T0
        self.update_time = T0 + timedelta(minutes=minute)

    def to_dict(self) -> dict[str, Any]:
        return self.data


def _relay(posted: list[tuple[str, relay.Event]], results: list[bool] | None = None) -> Any:
    def post(function: str, event: relay.Event) -> bool:
        posted.append((function, event))
        return results.pop(0) if results else True

    return relay.Relay("demo-alodoktor", "http://gateway.invalid", workers=0, post=post)


def _parsed(event: relay.Event) -> Any:
    attributes = {k.removeprefix("ce-"): v for k, v in event.headers.items() if k[:3] == "ce-"}
    return firestore_events.parse(attributes, event.body)


def _emulator_post(
    path: str, old: Snap | None, new: Snap | None, event_type: str = relay.EVENT_TYPE
) -> tuple[dict[str, str], bytes]:
    """What the Firestore emulator posts: its own headers (whole-second time, the project named
    twice in the source) and the DocumentEventData as base64 text."""
    made = relay.cloud_event("demo-alodoktor", path, old, new, T0, event_type)
    headers = {
        "Content-Type": "application/protobuf",
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-source": "//firestore.googleapis.com/projects/projects/demo-alodoktor/databases/"
        "(default)",
        "ce-id": "53257576-eefc-4d75-b813-5fd6f582d195",
        "ce-subject": f"documents/{path}",
        "ce-time": "2026-05-01T09:30:15Z",
        "ce-location": "us-central1",
        "ce-project": "demo-alodoktor",
        "ce-database": "(default)",
        "ce-namespace": "(default)",
        "ce-document": path,
    }
    return headers, base64.b64encode(made.body)


def test_an_emulator_post_becomes_the_event_eventarc_sends():
    headers, body = _emulator_post(
        "users/a", Snap("users/a", {"n": 0}, 0), Snap("users/a", {"n": 1}, 1)
    )
    event = relay.from_emulator("demo-alodoktor", headers, body)

    assert event.body == base64.b64decode(body)  # raw protobuf, as Eventarc sends it
    assert event.id == headers["ce-id"]  # a redelivery keeps its id
    assert event.headers["ce-source"] == (
        "//firestore.googleapis.com/projects/demo-alodoktor/databases/(default)"
    )
    change = _parsed(event)
    assert (change.path, change.action, change.before, change.after) == (
        "users/a",
        "update",
        {"n": 0},
        {"n": 1},
    )
    # The commit time to the microsecond (the emulator's own ce-time has whole seconds).
    assert change.at == T0 + timedelta(minutes=1)


def test_a_delete_happens_when_it_arrives_and_a_malformed_post_is_refused():
    headers, body = _emulator_post("users/a", Snap("users/a", {"n": 1}, 1), None)
    before = datetime.now(UTC)
    change = _parsed(relay.from_emulator("demo-alodoktor", headers, body))
    assert change.action == "delete"
    assert change.before == {"n": 1}
    assert before <= change.at <= datetime.now(UTC)

    with pytest.raises(relay.NotAnEmulatorEvent):
        relay.from_emulator("demo-alodoktor", headers, b"not base64 at all!")
    with pytest.raises(relay.NotAnEmulatorEvent):
        relay.from_emulator("demo-alodoktor", {**headers, "ce-document": ""}, body)


def test_each_post_goes_to_its_triggers_function_and_nothing_else():
    r = _relay([])
    headers, body = _emulator_post("users/a", None, Snap("users/a", {"n": 1}, 0))
    r.accept("audit-trigger-users", headers, body)
    created, created_body = _emulator_post(
        "notifications/n1",
        None,
        Snap("notifications/n1", {"status": "queued"}, 0),
        relay.CREATED_TYPE,
    )
    r.accept("notify-notifications", created, created_body)

    assert [e.headers["ce-document"] for e in r.queued("audit-trigger")] == ["users/a"]
    (notice,) = r.queued("notify")
    assert notice.headers["ce-type"] == relay.CREATED_TYPE
    with pytest.raises(KeyError):
        r.accept("audit-trigger-nowhere", headers, body)
    # A `written` event on notify's `created` trigger is not what its trigger filters for.
    with pytest.raises(relay.NotAnEmulatorEvent):
        r.accept("notify-notifications", headers, body)
    assert r.queued("notify") == []


def test_the_relays_triggers_are_the_ones_terraform_creates():
    code = json.loads((ROOT / "terraform" / "generated" / "code.json").read_text())
    # terraform/events.tf: "${name}-${lower(collection)}" per event function and collection,
    # matching "${collection}/{document}"; audit-trigger on `written`, notify on `created`.
    expected = {
        f"audit-trigger-{c.lower()}": (c, relay.EVENT_TYPE) for c in code["audited_collections"]
    } | {
        f"notify-{code['outbox_collection'].lower()}": (
            code["outbox_collection"],
            relay.CREATED_TYPE,
        )
    }
    made = {t.id: (t.collection, t.event_type) for t in relay.TRIGGERS}
    assert made == expected
    assert {t.collection for t in relay.TRIGGERS if t.function == "audit-trigger"} == set(
        AUDITED_COLLECTIONS
    )
    for trigger in relay.TRIGGERS:
        assert trigger.registration()["document"] == {
            "value": f"{trigger.collection}/{{document}}",
            "matchType": "PATH_PATTERN",
        }


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

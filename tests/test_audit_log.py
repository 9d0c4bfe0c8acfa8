"""The audit log's pure core: canonical form, diff, redaction, entries and chain verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.audit import rules as audit_log
from shared.audit.rules import Change, canonical, diff, entry_for_change, link, verify

AT = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_canonical_form_ignores_key_order_and_zone_of_times():
    plus7 = timezone(timedelta(hours=7))
    a = {"b": 1, "a": [1, "x", None], "t": AT}
    b = {"t": AT.astimezone(plus7), "a": [1, "x", None], "b": 1}
    assert canonical(a) == canonical(b)
    assert canonical({"x": 1}) != canonical({"x": 1.0})
    assert canonical({"x": "1"}) != canonical({"x": 1})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_form_is_deterministic(value):
    assert canonical(value) == canonical(value)
    assert audit_log.digest(value) == audit_log.digest(value)


def test_diff_lists_changed_fields_only_and_never_meta():
    before = {"a": 1, "b": {"x": 1}, "gone": "y", "_meta": {"by": "u1"}}
    after = {"a": 1, "b": {"x": 2}, "new": True, "_meta": {"by": "u2"}}
    assert diff(before, after) == {
        "b": {"before": {"x": 1}, "after": {"x": 2}},
        "gone": {"before": "y", "after": None},
        "new": {"before": None, "after": True},
    }


def test_health_fields_are_hashed_not_kept():
    before = {"notes": "hypertension", "status": "draft"}
    after = {"notes": "hypertension, diabetes", "status": "draft"}
    changes = diff(before, after, redacted=audit_log.redacted_fields("prescriptions/p1"))
    entry = changes["notes"]
    assert entry["redacted"] is True
    assert entry["before"] == "sha256:" + audit_log.digest("hypertension")
    assert "diabetes" not in str(changes)
    assert "items" in audit_log.HEALTH_FIELDS
    assert "csrfToken" in audit_log.redacted_fields("sessions/s1")
    assert "csrfToken" not in audit_log.redacted_fields("users/u1")


def _change(before, after, path="users/u1", event="ev-1"):
    return Change(event_id=event, path=path, at=AT, before=before, after=after)


def test_entries_name_the_actor_of_the_state_they_record():
    created = entry_for_change(_change(None, {"a": 1, "_meta": {"by": "u1", "requestId": "r1"}}))
    assert created is not None
    assert (created["action"], created["actor"], created["requestId"]) == ("create", "u1", "r1")
    deleted = entry_for_change(_change({"a": 1, "_meta": {"by": "admin"}}, None))
    assert deleted is not None
    assert (deleted["action"], deleted["actor"]) == ("delete", "admin")
    assert deleted["changes"] == {"a": {"before": 1, "after": None}}
    unstamped = entry_for_change(_change({"a": 1}, {"a": 2}))
    assert unstamped is not None
    assert (unstamped["action"], unstamped["actor"]) == ("update", "system")


def test_a_change_of_meta_alone_makes_no_entry():
    assert entry_for_change(_change({"a": 1, "_meta": {"by": "u"}}, {"a": 1, "_meta": {}})) is None


def test_only_documents_of_audited_collections_are_audited():
    assert audit_log.is_audited("users/u1")
    assert audit_log.is_audited("clinics/c1/availability/a1")
    assert not audit_log.is_audited("audit/e-1")
    assert not audit_log.is_audited("auditHead/chain")
    assert not audit_log.is_audited("directory/u1")
    assert not audit_log.is_audited("users")


def test_redelivered_events_map_to_one_entry_id():
    assert audit_log.event_entry_id("ev/1") == audit_log.event_entry_id("ev/1")
    assert audit_log.event_entry_id("ev/1") != audit_log.event_entry_id("ev/2")
    assert "/" not in audit_log.event_entry_id("a/b/c")


def _chain(n):
    entries, prev = [], audit_log.GENESIS_HASH
    for i in range(1, n + 1):
        content = entry_for_change(_change(None, {"i": i}, path=f"users/u{i}", event=f"e{i}"))
        assert content is not None
        entry = link(content, seq=i, prev_hash=prev)
        prev = entry["hash"]
        entries.append((f"id{i}", entry))
    return entries


def _head(entries):
    return {"seq": entries[-1][1]["seq"], "hash": entries[-1][1]["hash"]}


def test_an_intact_chain_verifies():
    entries = _chain(5)
    assert verify(entries, _head(entries)) == audit_log.Verdict(True, 5)
    assert verify([], None) == audit_log.Verdict(True, 0)


def test_an_edited_entry_breaks_the_chain_at_that_entry():
    entries = _chain(5)
    entries[2][1]["actor"] = "someone-else"
    verdict = verify(entries, _head(entries))
    assert (verdict.ok, verdict.broken_at, verdict.entry_id, verdict.count) == (
        False,
        3,
        "id3",
        2,
    )


def test_a_rehashed_edit_still_breaks_at_the_next_entry():
    entries = _chain(5)
    entries[2][1]["actor"] = "someone-else"
    entries[2][1]["hash"] = audit_log.entry_hash(entries[2][1])
    verdict = verify(entries, _head(entries))
    assert (verdict.broken_at, verdict.entry_id) == (4, "id4")


def test_a_removed_entry_is_reported_by_its_seq():
    entries = _chain(5)
    head = _head(entries)
    del entries[1]
    assert verify(entries, head).broken_at == 2
    # the newest entry removed leaves no gap: the head tells
    entries = _chain(5)
    head = _head(entries)
    verdict = verify(entries[:-1], head)
    assert (verdict.ok, verdict.broken_at) == (False, 5)


def test_entries_numbered_after_the_head_are_left_to_the_next_verification():
    entries = _chain(5)
    head = _head(entries[:3])  # read before entries 4 and 5 were appended
    assert verify(entries, head) == audit_log.Verdict(True, 3)
    assert audit_log.verified_through(head) == 3
    assert audit_log.verified_through(None) is None
    # what the head covers is still checked: a gap or an edit before it breaks the chain
    verdict = verify(entries[:1] + entries[2:], head)
    assert (verdict.ok, verdict.broken_at) == (False, 2)
    entries[2][1]["actor"] = "someone-else"
    assert verify(entries, head).broken_at == 3
    # an edit after the head is not looked at until a head covers it
    entries = _chain(5)
    entries[4][1]["actor"] = "someone-else"
    assert verify(entries, _head(entries[:3])).ok is True
    assert verify(entries, _head(entries)).broken_at == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_floats_still_have_one_canonical_form(bad):
    assert canonical({"x": bad}) == canonical({"x": bad})

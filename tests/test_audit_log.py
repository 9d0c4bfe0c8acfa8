"""The audit log's pure core: canonical form, diff, keyed hashing, entries and their macs,
checkpoints (a chain of them, the entries of a range, inclusion proofs), the legacy chain and
the FHIR view. No emulator: what a tampered log looks like is built here in memory."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.audit import checkpoints as cps
from shared.audit import fhir, merkle
from shared.audit import rules as audit_log
from shared.audit.rules import Change, HashKeys, canonical, diff, entry_for_change, link
from shared.audit.signing import SigningKeys

AT = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
KEYS = HashKeys.parse("test-hash-key")
KEY = KEYS.current
SIGNER = SigningKeys.parse("test-signing-key")
PUBLIC = SIGNER.public_keys()


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
def test_canonical_form_is_deterministic_and_reads_back_as_itself(value):
    assert canonical(value) == canonical(value)
    assert audit_log.digest(value) == audit_log.digest(value)
    # what an export writes is read back to the very bytes that were hashed
    document = {"v": value, "t": AT}
    assert canonical(audit_log.canonical_json(canonical(document))) == canonical(document)


def test_a_json_line_that_is_not_canonical_is_refused():
    with pytest.raises(ValueError):
        audit_log.canonical_json(b'{"b":1, "a":2}')
    with pytest.raises(ValueError):
        audit_log.canonical_json(b"[1]")


def test_diff_lists_changed_fields_only_and_never_meta():
    before = {"a": 1, "b": {"x": 1}, "gone": "y", "_meta": {"by": "u1"}}
    after = {"a": 1, "b": {"x": 2}, "new": True, "_meta": {"by": "u2"}}
    assert diff(before, after) == {
        "b": {"before": {"x": 1}, "after": {"x": 2}},
        "gone": {"before": "y", "after": None},
        "new": {"before": None, "after": True},
    }


def test_health_fields_are_kept_as_keyed_hashes_a_guess_cannot_be_checked_against():
    before = {"notes": "hypertension", "status": "draft"}
    after = {"notes": "hypertension, diabetes", "status": "draft"}
    changes = diff(before, after, redacted=audit_log.redacted_fields("prescriptions/p1"), key=KEY)
    recorded = changes["notes"]["before"]
    assert changes["notes"]["redacted"] is True
    assert "diabetes" not in str(changes)
    assert "hypertension" not in str(changes)
    # Someone guessing the value: its plain SHA-256 (what the log kept before) does not match,
    # nor does an HMAC under any key but the log's.
    guess = audit_log.canonical("hypertension")
    assert recorded != "sha256:" + hashlib.sha256(guess).hexdigest()
    assert hashlib.sha256(guess).hexdigest() not in recorded
    assert recorded != HashKeys.parse("a-guessed-key").current.redact(guess)
    assert hmac.new(b"", guess, hashlib.sha256).hexdigest() not in recorded
    # whoever holds the key (an investigation) can still tell whether a value was that one
    assert recorded == KEY.redact(guess)
    assert recorded.startswith("hmac-sha256:")


def test_secrets_are_redacted_per_collection_and_need_a_key():
    assert "items" in audit_log.HEALTH_FIELDS
    assert "csrfToken" in audit_log.redacted_fields("sessions/s1")
    assert "csrfToken" not in audit_log.redacted_fields("users/u1")
    with pytest.raises(audit_log.KeyMissing):
        diff({"notes": "a"}, {"notes": "b"}, redacted=frozenset({"notes"}))
    with pytest.raises(audit_log.KeyMissing):
        _ = HashKeys.parse("").current


def _change(before, after, path="users/u1", event="ev-1"):
    return Change(event_id=event, path=path, at=AT, before=before, after=after)


def test_entries_name_the_actor_of_the_state_they_record_and_their_key():
    created = entry_for_change(
        _change(None, {"a": 1, "_meta": {"by": "u1", "requestId": "r1"}}), KEY
    )
    assert created is not None
    assert (created["action"], created["actor"], created["requestId"]) == ("create", "u1", "r1")
    assert created["keyId"] == KEY.key_id
    deleted = entry_for_change(_change({"a": 1, "_meta": {"by": "admin"}}, None), KEY)
    assert deleted is not None
    assert (deleted["action"], deleted["actor"]) == ("delete", "admin")
    assert deleted["changes"] == {"a": {"before": 1, "after": None}}
    unstamped = entry_for_change(_change({"a": 1}, {"a": 2}), KEY)
    assert unstamped is not None
    assert (unstamped["action"], unstamped["actor"]) == ("update", "system")


def test_a_change_of_meta_or_of_unaudited_fields_alone_makes_no_entry():
    meta_only = _change({"a": 1, "_meta": {"by": "u"}}, {"a": 1, "_meta": {}})
    assert entry_for_change(meta_only, KEY) is None
    touch = _change(
        {"uid": "u", "lastUsedAt": AT}, {"uid": "u", "lastUsedAt": AT + timedelta(1)}, "sessions/s"
    )
    assert entry_for_change(touch, KEY) is None


def test_only_documents_of_audited_collections_are_audited():
    assert audit_log.is_audited("users/u1")
    assert audit_log.is_audited("clinics/c1/availability/a1")
    assert not audit_log.is_audited("audit/e-1")
    assert not audit_log.is_audited("auditCheckpoints/000000000001")
    assert not audit_log.is_audited("directory/u1")
    assert not audit_log.is_audited("users")


def test_redelivered_events_map_to_one_entry_id():
    assert audit_log.event_entry_id("ev/1") == audit_log.event_entry_id("ev/1")
    assert audit_log.event_entry_id("ev/1") != audit_log.event_entry_id("ev/2")
    assert "/" not in audit_log.event_entry_id("a/b/c")


# -- entries as stored ---------------------------------------------------------------------


def stored_entry(i: int, written: datetime, key: audit_log.HashKey = KEY) -> dict[str, Any]:
    """Entry i as Firestore holds it once written (its writtenAt set by the server)."""
    content = entry_for_change(
        _change(None, {"i": i, "notes": f"n{i}"}, path=f"prescriptions/p{i}", event=f"ev{i}"), key
    )
    assert content is not None
    return {**audit_log.with_mac(f"e{i:03d}", content, key), "writtenAt": written}


def test_an_entrys_mac_names_an_edit_and_an_invented_entry():
    entry = stored_entry(1, AT)
    assert audit_log.entry_problem("e001", entry, KEYS) is None
    edited = {**entry, "actor": "someone-else"}
    assert "mac" in (audit_log.entry_problem("e001", edited, KEYS) or "")
    # the same content under another id is another entry: its mac does not move with it
    assert audit_log.entry_problem("e002", entry, KEYS) is not None
    invented = {**entry, "mac": "0" * 64}
    assert audit_log.entry_problem("e001", invented, KEYS) is not None
    assert "unknown key" in (audit_log.entry_problem("e001", entry, HashKeys.parse("x")) or "")


def test_a_rotated_hash_key_still_verifies_what_the_old_key_wrote():
    old = stored_entry(1, AT, HashKeys.parse("old-key").current)
    rotated = HashKeys.parse("new-key, old-key")
    assert rotated.current.key_id == HashKeys.parse("new-key").current.key_id
    assert audit_log.entry_problem("e001", old, rotated) is None
    assert audit_log.entry_problem("e001", old, HashKeys.parse("new-key")) is not None
    assert stored_entry(2, AT, rotated.current)["keyId"] != old["keyId"]


def test_what_the_store_says_about_an_entry():
    created = AT + timedelta(milliseconds=20)
    assert audit_log.storage_problem(AT, created, created, 3) is None
    assert "edited" in (audit_log.storage_problem(AT, created, created + timedelta(1), 3) or "")
    late = AT + timedelta(seconds=30)
    assert "written late" in (audit_log.storage_problem(AT, late, late, 3) or "")


# -- checkpoints ---------------------------------------------------------------------------


def entries_log(n: int, start: datetime = AT) -> list[tuple[str, dict[str, Any]]]:
    return [(f"e{i:03d}", stored_entry(i, start + timedelta(milliseconds=i))) for i in range(n)]


def seal(
    previous: dict[str, Any] | None,
    rows: list[tuple[str, dict[str, Any]]],
    *,
    chunk_size: int = 4,
    signer: SigningKeys = SIGNER,
) -> dict[str, Any]:
    builder = cps.Builder(chunk_size=chunk_size)
    for entry_id, entry in rows:
        builder.add(entry_id, entry)
    body = cps.make_body(
        previous=previous,
        kind="entries",
        builder=builder,
        cutoff=AT + timedelta(hours=1),
        sealed_at=AT + timedelta(hours=1),
        sealed_by="test",
        key_id=signer.current.key_id,
    )
    return {
        **body,
        "hash": cps.hash_of(body),
        "signature": signer.current.sign(cps.signing_message(body)),
    }


def chain(sizes: list[int]) -> tuple[list[dict[str, Any]], list[list[tuple[str, Any]]]]:
    rows = entries_log(sum(sizes))
    made, ranges, previous, at = [], [], None, 0
    for size in sizes:
        part = rows[at : at + size]
        previous = seal(previous, part)
        made.append(previous)
        ranges.append(part)
        at += size
    return made, ranges


def test_an_intact_chain_of_checkpoints_verifies():
    made, _ = chain([5, 9, 1])
    verdict = cps.verify_chain(made, None, PUBLIC)
    assert verdict == cps.ChainVerdict(True, 3, 15, 3)
    assert [c["total"] for c in made] == [5, 14, 15]
    assert made[1]["range"]["from"] == made[0]["range"]["through"]
    # from any checkpoint on, given the one before it
    assert cps.verify_chain(made[2:], made[1], PUBLIC) == cps.ChainVerdict(True, 1, 1, 3)


def test_a_forged_checkpoint_is_found_at_that_checkpoint():
    made, _ = chain([5, 9, 4])
    # content changed, hash left: the hash says so
    forged = [made[0], {**made[1], "count": 8}, made[2]]
    assert cps.verify_chain(forged, None, PUBLIC).broken_at == 2
    # content and hash redone, signature not: the signature says so
    body = cps.body_of({**made[1], "root": "00" * 32})
    resigned = [made[0], {**body, "hash": cps.hash_of(body), "signature": made[1]["signature"]}]
    verdict = cps.verify_chain(resigned, None, PUBLIC)
    assert (verdict.broken_at, verdict.reason) == (2, "the signature does not verify")
    # signed by a key the verifier does not trust
    mallory = SigningKeys.parse("mallory")
    body = cps.body_of(made[1])
    other = {**body, "keyId": mallory.current.key_id}
    other = {
        **other,
        "hash": cps.hash_of(other),
        "signature": mallory.current.sign(cps.signing_message(other)),
    }
    verdict = cps.verify_chain([made[0], other], None, PUBLIC)
    assert verdict.broken_at == 2
    assert "unknown key" in (verdict.reason or "")


def test_a_removed_or_reordered_checkpoint_is_found_where_it_went_missing():
    made, _ = chain([3, 3, 3, 3])
    verdict = cps.verify_chain([made[0], made[2], made[3]], None, PUBLIC)
    assert (verdict.ok, verdict.checked, verdict.broken_at) == (False, 1, 3)
    assert verdict.reason == "checkpoint 2 is missing"
    verdict = cps.verify_chain([made[1], made[0]], None, PUBLIC)
    assert (verdict.broken_at, verdict.checked) == (2, 0)


def test_a_checkpoint_whose_range_overlaps_the_previous_one_does_not_link():
    made, _ = chain([4, 4])
    body = cps.body_of(made[1])
    body["range"] = {**body["range"], "from": {"at": AT, "id": "e000"}}
    resigned = {
        **body,
        "hash": cps.hash_of(body),
        "signature": SIGNER.current.sign(cps.signing_message(body)),
    }
    verdict = cps.verify_chain([made[0], resigned], None, PUBLIC)
    assert verdict.broken_at == 2
    assert verdict.reason == "its range does not start where the previous one ended"


def test_an_entry_a_seal_left_out_is_found_by_the_range_after_it():
    made, _ = chain([4])
    rows = entries_log(8)
    skipping = seal(made[0], rows[5:])  # e004 was written in its range but not sealed
    found = _verify_range(skipping, _rows(rows))
    assert found is not None
    assert (found.position, found.entry_id) == (0, "e004")


def _rows(part: list[tuple[str, dict[str, Any]]]) -> list[cps.Row]:
    return [cps.Row(entry_id, entry) for entry_id, entry in part]


def _verify_range(checkpoint: dict[str, Any], rows: list[cps.Row]) -> cps.RangeBreak | None:
    """Chunk by chunk, each read as the store answers shared.audit.proofs.read_chunk: the
    first from right after the range's start, the others from their own start."""
    through = cps.cursor_key("entries", checkpoint["range"]["through"])
    for chunk, spec in enumerate(checkpoint["chunks"]):
        if chunk == 0:
            start = checkpoint["range"]["from"]
            tail = [
                r
                for r in rows
                if start is None
                or cps.entry_key(r.entry_id, r.entry) > cps.cursor_key("entries", start)
            ]
        else:
            first = cps.cursor_key("entries", spec["start"])
            tail = [r for r in rows if cps.entry_key(r.entry_id, r.entry) >= first]
        tail = [r for r in tail if cps.entry_key(r.entry_id, r.entry) <= through]
        found = cps.verify_chunk(checkpoint, chunk, tail, KEYS)
        if found:
            return found
    return None


def test_an_entry_slipped_in_between_two_chunks_is_found():
    made, ranges = chain([8])
    rows = _rows(ranges[0])
    _, neighbour = ranges[0][3]
    rows.insert(4, cps.Row("e003x", {**neighbour}))  # a copy, its mac intact for its own id
    found = _verify_range(made[0], rows)
    assert found is not None
    assert found.entry_id == "e003x"


def test_the_entries_of_an_intact_range_verify():
    made, ranges = chain([10])
    assert _verify_range(made[0], _rows(ranges[0])) is None
    assert [c["start"]["id"] for c in made[0]["chunks"]] == ["e000", "e004", "e008"]


def test_an_edited_entry_is_found_at_that_entry():
    made, ranges = chain([10])
    rows = _rows(ranges[0])
    entry_id, entry = ranges[0][6]
    rows[6] = cps.Row(entry_id, {**entry, "actor": "someone-else"})
    found = _verify_range(made[0], rows)
    assert found is not None
    assert (found.position, found.entry_id) == (6, "e006")
    # edited with the key in hand (mac redone): the chunk's root still tells
    forged = audit_log.with_mac(entry_id, {**entry, "actor": "x"}, KEY)
    rows[6] = cps.Row(entry_id, forged)
    found = _verify_range(made[0], rows)
    assert found is not None
    assert found.position == 4
    assert "do not match" in found.reason


def test_a_deleted_entry_is_found_in_its_chunk():
    made, ranges = chain([10])
    rows = _rows(ranges[0])
    del rows[5]
    found = _verify_range(made[0], rows)
    assert found is not None
    assert found.position == 4
    rows = _rows(ranges[0])[:-1]  # the newest entry: the last chunk comes up short
    found = _verify_range(made[0], rows)
    assert found is not None
    assert (found.position, found.entry_id) == (9, None)
    assert "missing" in found.reason


def test_an_inserted_entry_is_found_at_that_entry():
    made, ranges = chain([10])
    rows = _rows(ranges[0])
    _, neighbour = ranges[0][3]
    fake = {**neighbour, "actor": "mallory", "writtenAt": neighbour["writtenAt"]}
    rows.insert(4, cps.Row("e003x", fake))  # sorts right after e003
    found = _verify_range(made[0], rows)
    assert found is not None
    assert (found.position, found.entry_id) == (4, "e003x")


def test_reordered_entries_are_found_in_their_chunk():
    """Two entries' writtenAt swapped: each mac still holds (it cannot cover the server's
    time), the order the store answers in changes, and the chunk's root says so. (In
    Firestore each edited entry is also named: its update time is not its create time.)"""
    made, ranges = chain([10])
    (a, first), (b, second) = ranges[0][5], ranges[0][6]
    swapped = dict(ranges[0])
    swapped[a] = {**first, "writtenAt": second["writtenAt"]}
    swapped[b] = {**second, "writtenAt": first["writtenAt"]}
    rows = sorted(_rows(list(swapped.items())), key=lambda r: cps.entry_key(r.entry_id, r.entry))
    found = _verify_range(made[0], rows)
    assert found is not None
    assert (found.position, found.entry_id) == (4, None)
    assert "reordered" in found.reason


def test_entries_out_of_order_in_a_file_are_found_where_the_order_breaks():
    made, ranges = chain([10])
    rows = _rows(ranges[0])
    rows[2], rows[3] = rows[3], rows[2]  # as lines of an export, swapped
    found = cps.verify_chunk(made[0], 0, rows, None)
    assert found is not None
    assert (found.position, found.entry_id, found.reason) == (3, "e002", "out of order")


def test_an_inclusion_proof_verifies_with_the_checkpoint_alone_and_fails_when_altered():
    import json

    made, ranges = chain([11])
    checkpoint = made[0]
    chunk, offset = 2, 1  # entry 9
    rows = ranges[0][8:11]
    leaves = [merkle.leaf_hash(audit_log.leaf(i, e)) for i, e in rows]
    index, path = cps.inclusion_proof(checkpoint, chunk, leaves, offset)
    assert index == 9
    entry_id, entry = ranges[0][9]
    proof = {
        "entryId": entry_id,
        "leaf": audit_log.leaf(entry_id, entry).decode(),
        "index": index,
        "path": path,
        "checkpoint": json.loads(canonical(checkpoint)),  # as the API hands it out
    }
    assert cps.proof_problem(proof, PUBLIC) is None
    assert cps.proof_problem({**proof, "index": 8}, PUBLIC) is not None
    assert cps.proof_problem({**proof, "path": ["00" * 32, *path[1:]]}, PUBLIC) is not None
    other_leaf = audit_log.leaf(entry_id, {**entry, "actor": "x"}).decode()
    assert cps.proof_problem({**proof, "leaf": other_leaf}, PUBLIC) is not None
    assert cps.proof_problem({**proof, "entryId": "e001"}, PUBLIC) is not None
    tampered = {**proof["checkpoint"], "count": 12}
    assert "hash" in (cps.proof_problem({**proof, "checkpoint": tampered}, PUBLIC) or "")
    assert "unknown key" in (cps.proof_problem(proof, {}) or "")


# -- the legacy chain ----------------------------------------------------------------------


def _legacy(n):
    entries, prev = [], audit_log.GENESIS_HASH
    for i in range(1, n + 1):
        content = {"action": "create", "resource": f"users/u{i}", "actor": "a", "at": AT}
        entry = link(content, seq=i, prev_hash=prev)
        prev = entry["hash"]
        entries.append((f"id{i}", entry))
    return entries


def test_the_legacy_chain_verifies_and_breaks_at_the_right_entry():
    entries = _legacy(5)
    assert audit_log.verify_chain(entries, through=5) == audit_log.Verdict(True, 5)
    entries[2][1]["actor"] = "someone-else"
    verdict = audit_log.verify_chain(entries, through=5)
    assert (verdict.ok, verdict.broken_at, verdict.entry_id) == (False, 3, "id3")
    entries = _legacy(5)
    assert audit_log.verify_chain(entries[:1] + entries[2:], through=5).broken_at == 2
    assert audit_log.verify_chain(entries[:4], through=5).broken_at == 5  # the newest, gone
    # from a sealed point on
    verdict = audit_log.verify_chain(
        entries[2:], after_seq=2, after_hash=entries[1][1]["hash"], through=5
    )
    assert verdict == audit_log.Verdict(True, 3)


def test_legacy_entries_are_told_apart_from_new_ones():
    assert audit_log.is_legacy(_legacy(1)[0][1])
    assert not audit_log.is_legacy(stored_entry(1, AT))


# -- FHIR ----------------------------------------------------------------------------------


def test_an_entry_as_a_fhir_audit_event():
    entry = stored_entry(3, AT + timedelta(seconds=1))
    event = fhir.audit_event("e003", {**entry, "requestId": "req-1"})
    assert event["resourceType"] == "AuditEvent"
    assert (event["action"], event["subtype"][0]["code"]) == ("C", "create")
    assert event["recorded"] == "2026-05-01T12:00:01.123456Z"
    assert event["period"]["start"] == "2026-05-01T12:00:00.123456Z"
    assert event["agent"][0] == {"who": {"identifier": {"value": "system"}}, "requestor": True}
    assert event["entity"][0]["what"] == {"reference": "prescriptions/p3"}
    assert {d["valueString"] for d in event["entity"][0]["detail"]} == {"i", "notes"}
    assert "n3" not in str(event)  # no values, keyed hashes or not
    read = {**entry, "action": "read", "reason": "view prescription", "changes": {}}
    event = fhir.audit_event("r-1", read)
    assert (event["action"], event["type"]["code"]) == ("R", "110112")
    assert event["purposeOfEvent"] == [{"text": "view prescription"}]
    assert "detail" not in event["entity"][0]


def test_a_public_key_reads_as_base64_hex_or_jwk_with_its_id():
    from shared.audit import signing

    key = SIGNER.current
    forms = [
        signing.encode_public_key(key.public),
        key.public.hex(),
        json.dumps(signing.jwk(key.public)),
    ]
    for form in forms:
        assert signing.parse_public_key(form) == (key.key_id, key.public)
    jwk = signing.jwk(key.public)
    assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["alg"]) == (
        "OKP",
        "Ed25519",
        key.key_id,
        "EdDSA",
    )
    assert "=" not in jwk["x"]  # base64url, unpadded (RFC 8037)
    for bad in ("", "abc", json.dumps({**jwk, "crv": "X25519"}), json.dumps({**jwk, "kid": "k"})):
        with pytest.raises(ValueError):
            signing.parse_public_key(bad)


def test_a_checkpoint_counts_what_it_flagged_for_the_query_that_finds_it():
    builder = cps.Builder()
    builder.add("e1", {"v": 2, audit_log.WRITTEN_AT: AT, "action": "read"})
    body = cps.make_body(
        previous=None,
        kind="entries",
        builder=builder,
        cutoff=AT,
        sealed_at=AT,
        sealed_by="t",
        key_id=SIGNER.current.key_id,
        flagged=[{"id": "e1", "reason": "its mac does not match"}],
    )
    assert (body["flaggedCount"], body["flagged"]) == (
        1,
        [{"id": "e1", "reason": "its mac does not match"}],
    )

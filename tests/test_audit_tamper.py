"""Tampering with the audit log in Firestore, and with its export, is found at the right entry
or checkpoint, by the range verification, the scheduled check (which alerts: the log line
monitoring matches, a notice to every admin) and `python -m tools.audit_verify`.

Each test works on a log of its own: the Firestore emulator keeps each project apart, so the
test points the Firestore client at a fresh project (the stack's own log, which the other
audit tests verify, is never tampered with). Entries are written by the real code
(shared.audit.service), sealed by the real sealer; the tampering is done as an intruder with
database access would do it, straight through the Firestore client.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.audit import export, proofs, sealing, signing
from shared.audit import rules as audit_log
from shared.audit import service as audit
from shared.platform import clients, settings, store
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 4  # small chunks, so a handful of entries spans several


@pytest.fixture
def project(stack: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A project of this test's own on the stack's Firestore emulator."""
    from google.cloud import firestore

    name = f"demo-audit-{uuid.uuid4().hex[:10]}"
    monkeypatch.setattr(clients, "_db", firestore.Client(project=name))
    return name


def cli(stack: Any, project: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env, "GOOGLE_CLOUD_PROJECT": project, "GCLOUD_PROJECT": project}
    return subprocess.run(
        [sys.executable, "-m", "tools.audit_verify", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def settle() -> None:
    """Wait until every entry written so far is older than the sealing lag, by the server's
    clock (a read's read time), so one seal takes them all."""
    lag = timedelta(seconds=settings.get().audit_seal_lag_seconds)
    from google.cloud.firestore import Query

    newest = list(
        clients.db()
        .collection(audit.COLLECTION)
        .order_by(audit_log.WRITTEN_AT, direction=Query.DESCENDING)
        .limit(1)
        .stream()
    )
    if not newest:
        return
    written = newest[0].get(audit_log.WRITTEN_AT)
    probe = clients.db().collection("probe").document("clock")
    eventually(lambda: probe.get().read_time, lambda now: now - lag > written, "the sealing lag")


def write(n: int, tag: str = "t") -> None:
    """n entries: reads of health data (one commit) and changes (one write each)."""
    audit.record_reads([f"prescriptions/{tag}{i}" for i in range(n // 2)], "tamper test")
    for i in range(n - n // 2):
        change = audit_log.Change(
            f"{tag}-ev-{i}-{uuid.uuid4().hex}",
            f"prescriptions/{tag}{i}",
            datetime.now(UTC),
            {"status": "draft", "notes": "cough"},
            {"status": "issued", "notes": "cough, fever", "_meta": {"by": "doc-1"}},
        )
        assert audit.record_change(change) is not None


def seal(max_entries: int = sealing.MAX_ENTRIES) -> dict[str, Any]:
    settle()
    sealed = sealing.seal(by="test", max_entries=max_entries, chunk_size=CHUNK)
    assert sealed.created, sealed
    assert sealed.checkpoint is not None
    return sealed.checkpoint


def in_order() -> list[str]:
    """Entry ids as sealed: by writtenAt, then id."""
    col = clients.db().collection(audit.COLLECTION)
    return [s.id for s in col.order_by(audit_log.WRITTEN_AT).order_by("__name__").stream()]


def entry_ref(entry_id: str) -> Any:
    return clients.db().collection(audit.COLLECTION).document(entry_id)


@dataclass
class Log:
    ids: list[str]  # in sealed order
    checkpoints: list[dict[str, Any]]


@pytest.fixture
def log(project: str) -> Log:
    """Two checkpoints: entries 0-9 in the first, 10-19 in the second (chunks of 4)."""
    write(10, "a")
    first = seal()
    write(10, "b")
    second = seal()
    ids = in_order()
    assert (first["count"], second["count"], len(ids)) == (10, 10, 20)
    return Log(ids, [first, second])


def range_break(n: int) -> proofs.RangeVerdict:
    verdict = proofs.verify_range(n, 0, 100)
    assert verdict is not None
    return verdict


def admin_profile(uid: str = "admin-1") -> str:
    email = f"{uid}@test.alodoktor.test"
    store.set(
        clients.db().collection("users").document(uid),
        {
            "uid": uid,
            "email": email,
            "role": "admin",
            "approved": True,
            "disabled": False,
            "createdAt": datetime.now(UTC),
        },
        by="test",
    )
    return uid


def alerts_queued() -> list[dict[str, Any]]:
    col = clients.db().collection("notifications")
    return [s.to_dict() or {} for s in col.stream() if s.get("kind") == "audit_alert"]


def test_an_intact_log_verifies_everywhere(stack, project, log):
    assert proofs.verify_checkpoints(1).ok
    assert range_break(1).ok
    assert range_break(2).ok
    result = proofs.check(chunks=100)
    assert result.ok, result.problems
    assert (result.newest, result.entries_verified) == (2, 20)
    done = cli(stack, project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: 2 checkpoints, 20 entries verified"), done.stdout


def test_an_edited_entry_is_found_at_that_entry_and_alerted(stack, project, log, caplog):
    admin_profile()
    victim = log.ids[13]  # entry 3 of the second checkpoint
    entry_ref(victim).update({"actor": "someone-else"})

    verdict = range_break(2)
    assert (verdict.ok, verdict.position, verdict.entry_id) == (False, 3, victim)
    assert "edited" in (verdict.reason or "")
    assert range_break(1).ok  # the first checkpoint's entries are untouched

    with caplog.at_level(logging.ERROR, logger="alodoktor.audit"):
        result = proofs.check(chunks=100)
    assert not result.ok
    where = f"checkpoint 2, entry 3 ({victim})"
    assert [p["where"] for p in result.problems] == [where]
    lines = [r.getMessage() for r in caplog.records if r.name == "alodoktor.audit"]
    assert any(line.startswith(f"audit chain broken at {where}: ") for line in lines), lines
    assert (result.new, result.known) == (1, 0)
    (notice,) = alerts_queued()
    assert (notice["uid"], notice["data"]["where"]) == ("admin-1", where)
    # found again on the next run: not sent again, not listed again, counted as known
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="alodoktor.audit"):
        again = proofs.check(chunks=100)
    assert len(alerts_queued()) == 1
    assert (again.ok, again.problems, again.new, again.known) == (False, [], 0, 1)
    assert not [r for r in caplog.records if r.name == "alodoktor.audit"]

    done = cli(stack, project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"BROKEN at checkpoint 2, entry 3 ({victim})" in done.stdout

    # Put back as it was: the store still knows it was written again.
    original = {**entry_ref(victim).get().to_dict(), "actor": "doc-1"}
    entry_ref(victim).set(original)
    assert not range_break(2).ok


def test_an_edit_that_keeps_the_stores_times_is_still_found_by_the_roots(stack, project, log):
    """An intruder who could also rewrite the store's own times (a restore from a doctored
    backup) still cannot make an edited entry's leaf, or its mac without the key."""
    from shared.audit import checkpoints as cps

    victim = log.ids[6]
    edited = {**entry_ref(victim).get().to_dict(), "reason": "nothing to see"}
    rows = [
        cps.Row(r.entry_id, edited if r.entry_id == victim else r.entry)
        for r in proofs.read_chunk(log.checkpoints[0], 1)
    ]
    found = cps.verify_chunk(log.checkpoints[0], 1, rows, audit.hash_keys())
    assert found is not None
    assert (found.position, found.entry_id) == (6, victim)
    assert "mac" in found.reason


def test_a_deleted_entry_is_found_in_its_chunk(stack, project, log):
    entry_ref(log.ids[5]).delete()  # entry 5 of the first checkpoint: chunk 4-7
    verdict = range_break(1)
    assert (verdict.ok, verdict.position) == (False, 4)
    assert "do not match" in (verdict.reason or "")
    # one finding, where it is: the chunks after it (read in the same query) are not shifted
    result = proofs.check(chunks=100)
    assert [p["where"] for p in result.problems] == ["checkpoint 1, entry 4"]
    done = cli(stack, project)
    assert done.returncode == 1
    assert "BROKEN at checkpoint 1, entry 4" in done.stdout

    entry_ref(log.ids[19]).delete()  # the newest entry: nothing after it to notice
    verdict = range_break(2)
    assert (verdict.position, verdict.entry_id) == (9, None)
    assert "missing" in (verdict.reason or "")


def test_an_inserted_entry_is_found_at_that_entry(stack, project, log):
    model = entry_ref(log.ids[2]).get().to_dict()
    # an invented entry, its writtenAt inside the first range, right after entry 2
    fake_id = log.ids[2] + "x"
    entry_ref(fake_id).set({**model, "actor": "mallory", "reason": "backdated"})
    verdict = range_break(1)
    # named for what it is: not the log's (no valid mac), or stored long after its time
    assert (verdict.ok, verdict.position, verdict.entry_id) == (False, 3, fake_id)
    result = proofs.check(chunks=100)
    assert f"checkpoint 1, entry 3 ({fake_id})" in [p["where"] for p in result.problems]


def test_reordered_entries_are_found(stack, project, log):
    a, b = entry_ref(log.ids[11]), entry_ref(log.ids[16])
    at_a, at_b = a.get().get(audit_log.WRITTEN_AT), b.get().get(audit_log.WRITTEN_AT)
    a.update({audit_log.WRITTEN_AT: at_b})
    b.update({audit_log.WRITTEN_AT: at_a})
    verdict = range_break(2)
    assert not verdict.ok
    assert verdict.entry_id in {log.ids[11], log.ids[16]}
    assert "edited" in (verdict.reason or "")


def test_a_forged_or_removed_checkpoint_is_found_at_that_checkpoint(stack, project, log):
    admin_profile()
    assert proofs.check(chunks=0).newest == 2  # the check remembers checkpoint 2
    ref = sealing.collection().document("000000000001")
    real = ref.get().to_dict()
    ref.update({"count": 9})  # as if entry 9 had never been sealed
    verdict = proofs.verify_checkpoints(1)
    assert (verdict.ok, verdict.broken_at) == (False, 1)
    assert verdict.reason == "its content does not match its hash"
    done = cli(stack, project)
    assert done.returncode == 1
    assert "BROKEN at checkpoint 1" in done.stdout

    # re-hashed (no signing key at hand): the signature tells
    from shared.audit import checkpoints as cps

    body = cps.body_of({**real, "count": 9})
    ref.set({**body, "hash": cps.hash_of(body), "signature": real["signature"]})
    verdict = proofs.verify_checkpoints(1)
    assert (verdict.broken_at, verdict.reason) == (1, "the signature does not verify")
    ref.set(real)
    assert proofs.verify_checkpoints(1).ok

    # the newest checkpoint deleted: the chain alone cannot tell, the check remembers it
    sealing.collection().document("000000000002").delete()
    assert proofs.verify_checkpoints(1).ok
    result = proofs.check(chunks=0)
    assert result.problems == [
        {"where": "checkpoint 2", "reason": "it was verified before and is gone"}
    ]


def test_two_sealers_at_once_make_one_checkpoint(stack, project, monkeypatch):
    """Both sealers read the latest checkpoint before either writes (a barrier after the
    read makes sure): one creates checkpoint 1, the other answers it, nothing is sealed twice."""
    write(12)
    settle()
    barrier = threading.Barrier(2, timeout=60)
    real_latest = sealing.latest

    def latest_then_wait() -> dict[str, Any] | None:
        found = real_latest()
        barrier.wait()
        return found

    monkeypatch.setattr(sealing, "latest", latest_then_wait)
    results: list[sealing.Sealed] = []

    def sealer() -> None:
        results.append(sealing.seal(by="racer", chunk_size=CHUNK))

    threads = [threading.Thread(target=sealer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.created for r in results) == [False, True]
    assert {r.checkpoint["hash"] for r in results if r.checkpoint} == {
        r.checkpoint["hash"] for r in results if r.created and r.checkpoint
    }
    monkeypatch.setattr(sealing, "latest", real_latest)
    (only,) = list(sealing.collection().stream())
    assert only.get("count") == 12
    assert sealing.seal(by="test").checkpoint is None  # nothing left, nothing sealed twice


def forge() -> str:
    """An entry invented straight in Firestore, as the log's first one looks but with another
    actor (its mac cannot match): the next seal flags it."""
    from google.cloud import firestore

    forged_id = "e-" + "f" * 40
    model = entry_ref(in_order()[0]).get().to_dict()
    entry_ref(forged_id).create(
        {**model, "actor": "mallory", audit_log.WRITTEN_AT: firestore.SERVER_TIMESTAMP}
    )
    return forged_id


def test_an_entry_forged_before_its_seal_is_sealed_flagged_and_alerted(stack, project, caplog):
    admin_profile()
    write(6)
    forged_id = forge()
    with caplog.at_level(logging.ERROR, logger="alodoktor.audit"):
        checkpoint = seal()
    assert checkpoint["count"] == 7  # the log never stalls on it
    assert [f["id"] for f in checkpoint["flagged"]] == [forged_id]
    assert any(
        r.getMessage().startswith(f"audit chain broken at entry {forged_id} (checkpoint 1): ")
        for r in caplog.records
    )
    assert [n["data"]["where"] for n in alerts_queued()] == [f"entry {forged_id} (checkpoint 1)"]
    # alerted once: the check does not raise it again, and the range still binds it; but
    # every verdict says it is there, unresolved
    checked = proofs.check(chunks=100)
    assert checked.ok
    assert not checked.clean
    assert (checked.flagged.count, checked.flagged.unresolved) == (1, 1)
    assert [f.entry_id for f in checked.flagged.listed] == [forged_id]
    verdict = range_break(1)
    assert verdict.ok
    assert (verdict.flagged.unresolved, verdict.flagged.listed[0].entry_id) == (1, forged_id)
    _, flagged = proofs.verify_batch(1)
    assert not flagged.clean
    entry_ref(forged_id).delete()
    assert not range_break(1).ok


def _audited_acknowledgement(n: int, entry_id: str, note: str) -> None:
    """Acknowledge as the route does, and write the entry the audit trigger would (this
    project has no trigger)."""
    from shared.audit import findings

    findings.acknowledge(n, entry_id, note, by="admin-1")
    ref = (
        clients.db()
        .collection(findings.ACKNOWLEDGEMENTS)
        .document(findings.acknowledgement_id(n, entry_id))
    )
    after = ref.get().to_dict()
    change = audit_log.Change(f"ack-{uuid.uuid4().hex}", ref.path, datetime.now(UTC), None, after)
    assert audit.record_change(change) is not None


def test_a_flagged_entry_stays_in_every_verdict_until_acknowledged(stack, project, tmp_path):
    """Flagged at its seal and alerted once; after that the check, the export, and the offline
    tool on Firestore and on the export each still report it, unresolved, until an admin's
    acknowledgement (itself an audit entry), and then as acknowledged, with who and what."""
    from shared.audit import findings

    admin_profile()
    write(4)
    forged_id = forge()
    checkpoint = seal()
    assert (checkpoint["flaggedCount"], checkpoint["flagged"][0]["id"]) == (1, forged_id)
    target = tmp_path / "export"
    exported = export.export(storage=export.LocalStorage(target))
    assert exported.problems == []
    assert not exported.as_dict()["clean"]
    assert exported.flagged.unresolved == 1

    for _ in range(2):  # every time, not once
        assert not proofs.check(chunks=100).clean
        done = cli(stack, project)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "NOT CLEAN: 1 entries flagged when sealed, 1 unresolved" in done.stdout
        assert f"checkpoint 1, entry {forged_id}: " in done.stdout
        assert "UNRESOLVED" in done.stdout
        done = _offline(stack, project, target)
        assert done.returncode == 3, done.stdout + done.stderr
        assert f"checkpoint 1, entry {forged_id}: " in done.stdout

    with pytest.raises(findings.NotFlagged):
        findings.acknowledge(1, in_order()[0], "not flagged", by="admin-1")
    _audited_acknowledgement(1, forged_id, "restored from the export; mallory's access revoked")
    with pytest.raises(findings.AlreadyAcknowledged):
        findings.acknowledge(1, forged_id, "again", by="admin-1")

    checked = proofs.check(chunks=100)
    assert checked.clean
    (flag,) = checked.flagged.listed
    assert flag.acknowledgement is not None
    assert flag.acknowledgement["by"] == "admin-1"
    assert flag.acknowledgement["note"].startswith("restored from the export")
    done = cli(stack, project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "acknowledged by admin-1" in done.stdout

    # offline, the acknowledgement is known once its own entry is sealed and exported
    assert _offline(stack, project, target).returncode == 3
    seal()
    assert export.export(storage=export.LocalStorage(target)).checkpoints == 1
    done = _offline(stack, project, target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean: 1 entries flagged when sealed, 0 unresolved" in done.stdout
    assert "acknowledged by admin-1" in done.stdout


def test_what_is_not_sealed_yet_is_counted_with_its_oldest_time(stack, project):
    """Issue 23: a log with entries and no checkpoint is not "all verified, 0 entries"."""
    from shared.audit import findings

    assert findings.unsealed() == findings.Unsealed(0, False, None)
    write(6)
    waiting = findings.unsealed()
    oldest = entry_ref(in_order()[0]).get().get(audit_log.WRITTEN_AT)
    assert (waiting.count, waiting.more, waiting.oldest) == (6, False, oldest)
    done = cli(stack, project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 checkpoints, 0 entries verified; 6 entries not sealed yet" in done.stdout
    seal()
    write(2, "late")
    assert findings.unsealed().count == 2
    settle()
    sealing.seal(by="test", chunk_size=CHUNK)
    assert findings.unsealed() == findings.Unsealed(0, False, None)


def test_the_legacy_chain_is_sealed_as_the_first_checkpoints_history(stack, project):
    """A log from before issue 17: entries chained through auditHead/chain. The first seal
    takes it whole, by seq, as checkpoint 1; new entries go into the checkpoints after it."""
    prev, at = audit_log.GENESIS_HASH, datetime(2026, 1, 5, tzinfo=UTC)
    for seq in range(1, 8):
        content = {
            "action": "update",
            "resource": f"users/u{seq}",
            "collection": "users",
            "actor": "u1",
            "function": "users",
            "requestId": None,
            "eventId": f"old-{seq}",
            "at": at + timedelta(minutes=seq),
            "reason": None,
            "changes": {"notes": {"before": None, "after": "sha256:" + "ab" * 32}},
        }
        entry = audit_log.link(content, seq=seq, prev_hash=prev)
        prev = entry["hash"]
        entry_ref(f"old-{seq}").create(entry)
    clients.db().collection(audit.HEAD_COLLECTION).document(audit.HEAD_ID).set(
        {"seq": 7, "hash": prev, "entryId": "old-7"}
    )
    write(4)
    first = seal()
    assert (first["kind"], first["count"], first["range"]["through"]["seq"]) == ("legacy", 7, 7)
    second = seal()
    assert (second["kind"], second["count"]) == ("entries", 4)
    assert second["state"]["legacy"] == first["state"]["legacy"]
    assert proofs.verify_checkpoints(1).ok
    assert range_break(1).ok
    assert range_break(2).ok
    proof = proofs.inclusion_proof("old-5")
    assert proof is not None
    assert (proof["index"], proof["size"]) == (4, 7)
    from shared.audit import checkpoints as cps

    assert cps.proof_problem(proof, proofs.public_keys()) is None
    # the sealed history is tamper-evident like the rest
    entry_ref("old-3").update({"actor": "someone-else"})
    verdict = range_break(1)
    assert (verdict.ok, verdict.entry_id) == (False, "old-3")


def test_a_broken_legacy_chain_is_not_sealed(stack, project):
    admin_profile()
    prev = audit_log.GENESIS_HASH
    for seq in range(1, 4):
        entry = audit_log.link({"action": "create", "actor": "u"}, seq=seq, prev_hash=prev)
        prev = entry["hash"]
        entry_ref(f"old-{seq}").create(entry)
    clients.db().collection(audit.HEAD_COLLECTION).document(audit.HEAD_ID).set(
        {"seq": 3, "hash": prev}
    )
    entry_ref("old-2").update({"actor": "someone-else"})
    with pytest.raises(sealing.ChainBroken) as broken:
        sealing.seal(by="test")
    assert broken.value.where == "legacy entry 2 (old-2)"
    assert list(sealing.collection().stream()) == []
    assert [n["data"]["where"] for n in alerts_queued()] == ["legacy entry 2 (old-2)"]


# -- the export ----------------------------------------------------------------------------


def public_key_args() -> list[str]:
    keys = signing.configured().public_keys()
    return [a for k in keys.values() for a in ("--public-key", signing.encode_public_key(k))]


def test_the_export_verifies_offline_from_its_files_alone(stack, project, log, tmp_path):
    target = tmp_path / "export"
    result = export.export(storage=export.LocalStorage(target))
    assert (result.checkpoints, result.entries, result.problems) == (2, 20, [])
    names = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert names == sorted(
        [
            "checkpoints/000000000001.json",
            "checkpoints/000000000002.json",
            "entries/000000000001.jsonl",
            "entries/000000000002.jsonl",
            export.jwk_name(log.checkpoints[0]["keyId"]),
            export.key_name(log.checkpoints[0]["keyId"]),
        ]
    )
    # the key in both forms, the same key
    key_id = log.checkpoints[0]["keyId"]
    assert export.exported_keys(target) == {key_id: signing.configured().public_keys()[key_id]}
    jwk = json.loads((target / export.jwk_name(key_id)).read_bytes())
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", key_id)
    # nothing but the files, no emulator, no keys in the environment
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_", "FIRESTORE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "tools.audit_verify", "--export", str(target), *public_key_args()],
        cwd=ROOT,
        env=bare,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: 2 checkpoints, 20 entries verified"), done.stdout
    # a second run exports nothing new and rewrites nothing
    assert export.export(storage=export.LocalStorage(target)).checkpoints == 0


def _exported(tmp_path: Path) -> Path:
    target = tmp_path / "export"
    assert export.export(storage=export.LocalStorage(target)).checkpoints == 2
    return target


def _offline(stack, project, target: Path) -> subprocess.CompletedProcess[str]:
    return cli(stack, project, "--export", str(target), *public_key_args())


def test_a_tampered_export_is_found_at_the_right_entry_or_checkpoint(stack, project, log, tmp_path):
    pristine = _exported(tmp_path)

    def copy() -> Path:
        target = tmp_path / uuid.uuid4().hex
        shutil.copytree(pristine, target)
        return target

    lines_of = lambda t: (t / "entries/000000000002.jsonl").read_text().splitlines()  # noqa: E731

    edited = copy()
    lines = lines_of(edited)
    entry = json.loads(lines[6])
    entry["actor"] = "someone-else"
    lines[6] = audit_log.canonical(entry).decode()
    (edited / "entries/000000000002.jsonl").write_text("\n".join(lines) + "\n")
    done = _offline(stack, project, edited)
    assert done.returncode == 1
    assert "BROKEN at checkpoint 2, entry 4:" in done.stdout  # its chunk, 4-7

    removed = copy()
    lines = lines_of(removed)
    (removed / "entries/000000000002.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    assert "BROKEN at checkpoint 2, entry 9" in _offline(stack, project, removed).stdout

    swapped = copy()
    lines = lines_of(swapped)
    lines[1], lines[2] = lines[2], lines[1]
    (swapped / "entries/000000000002.jsonl").write_text("\n".join(lines) + "\n")
    done = _offline(stack, project, swapped)
    assert "BROKEN at checkpoint 2, entry 2" in done.stdout
    assert "out of order" in done.stdout

    forged = copy()
    checkpoint = json.loads((forged / "checkpoints/000000000001.json").read_bytes())
    checkpoint["count"] = 9
    (forged / "checkpoints/000000000001.json").write_bytes(audit_log.canonical(checkpoint))
    done = _offline(stack, project, forged)
    assert "BROKEN at checkpoint 1: its content does not match its hash" in done.stdout

    gone = copy()
    (gone / "checkpoints/000000000001.json").unlink()
    done = _offline(stack, project, gone)
    assert "BROKEN at checkpoint 2: checkpoint 2 is the first one there is" in done.stdout

    # signed by a key the verifier was not told to trust
    done = cli(
        stack,
        project,
        "--export",
        str(copy()),
        "--public-key",
        signing.encode_public_key(signing.SigningKeys.parse("mallory").current.public),
    )
    assert done.returncode == 1
    assert "signed by an unknown key" in done.stdout


def test_a_range_that_no_longer_verifies_is_not_exported_and_the_bucket_keeps_its_copy(
    stack, project, log, tmp_path
):
    admin_profile()
    target = tmp_path / "export"
    store_ = export.LocalStorage(target)
    # an earlier run wrote checkpoint 1's entries file, then stopped
    first = sealing.get(1)
    assert first is not None
    lines, _, _ = export._lines(first)
    assert lines is not None
    assert store_.create(export.entries_name(1), lines, export.JSONL)
    # meanwhile an entry of that range is edited in Firestore
    entry_ref(log.ids[1]).update({"actor": "someone-else"})
    result = export.export(storage=store_)
    assert result.checkpoints == 0
    assert result.problems == [
        {
            "where": f"checkpoint 1, entry 1 ({log.ids[1]})",
            "reason": result.problems[0]["reason"],
        }
    ]
    assert "edited" in result.problems[0]["reason"]
    assert [n["data"]["where"] for n in alerts_queued()] == [result.problems[0]["where"]]
    assert store_.read(export.entries_name(1)) == lines  # the bucket's copy stands


# -- retention, and what never goes unlogged ------------------------------------------------


def test_audit_records_are_never_changed_or_deleted_by_the_application(stack, project, log):
    entry, checkpoint = entry_ref(log.ids[0]), sealing.collection().document("000000000001")
    for ref in (entry, checkpoint):
        with pytest.raises(store.AppendOnly):
            store.delete(ref, by="admin")
        with pytest.raises(store.AppendOnly):
            store.update(ref, {"actor": "x"}, by="admin")
        with pytest.raises(store.AppendOnly):
            store.set(ref, {"actor": "x"}, by="admin")
    assert entry.get().exists
    assert checkpoint.get().exists
    assert range_break(1).ok


def test_a_read_of_health_data_fails_loudly_when_it_cannot_be_logged(stack, project, monkeypatch):
    """Without its key the log cannot write an entry: record_read raises (the route answers
    an error), so health data is never handed out unlogged."""
    unkeyed = dataclasses.replace(settings.get(), audit_hash_key="")
    monkeypatch.setattr(settings, "get", lambda: unkeyed)
    with pytest.raises(audit_log.KeyMissing):
        audit.record_read("prescriptions/p-1", "view prescription", actor="doc-1")
    assert in_order() == []


def test_nothing_is_sealed_without_the_signing_key(stack, project, monkeypatch):
    write(2)
    settle()
    unkeyed = dataclasses.replace(settings.get(), audit_signing_key="")
    monkeypatch.setattr(settings, "get", lambda: unkeyed)
    with pytest.raises(audit_log.KeyMissing):
        sealing.seal(by="test")
    assert list(sealing.collection().stream()) == []

"""The audit log end to end: the relay posts Firestore changes as Eventarc would, the trigger
writes one entry per change, the scheduler seals them into checkpoints, admins query, prove
and verify them. (Tampering is tested on logs of their own: tests/test_audit_tamper.py.)

Delivery is asynchronous, so tests poll for the entries they expect (with a generous timeout,
the machine is shared) and never assert how long anything took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from dev import relay
from shared.audit import checkpoints as cps
from shared.audit import events as firestore_events
from shared.audit import rules as audit_log
from shared.audit import service as audit
from shared.identity import sessions
from shared.platform import clients, context, store
from shared.platform.context import Principal, RequestContext, Role, Service
from tests.support import (
    Api,
    bearer,
    create_user,
    eventually,
    problem,
    service_api,
    session_cookie,
    sign_in,
)

ROOT = Path(__file__).resolve().parent.parent


def entries(resource: str) -> list[dict[str, Any]]:
    rows, _ = audit.list_entries(resource=resource, limit=100, cursor=None)
    return [data for _, data in rows]


def _written(entry: dict[str, Any]) -> tuple[Any, Any]:
    return (entry["at"], entry[audit_log.WRITTEN_AT])


def wait_for(
    resource: str, actions: list[str], *, settle: bool = True, changes_only: bool = False
) -> list[dict[str, Any]]:
    """The entries of `resource` in the order of the writes, once they are exactly `actions`.

    Events may be delivered (and so chained) out of order; `at` is when the write happened.

    With `settle`, a further look after the expected entries appear finds no extra one: a
    second entry for the same change would have been delivered alongside the first. With
    `changes_only`, the `read` entries of answers that handed the document out are left
    aside (written by the request, they land before or after the change's entry).
    """

    def listed() -> list[dict[str, Any]]:
        found = (e for e in entries(resource) if not changes_only or e["action"] != "read")
        return sorted(found, key=_written)

    found = eventually(listed, lambda got: len(got) >= len(actions), f"audit entries of {resource}")
    if settle:
        time.sleep(1.5)
    found = listed()
    assert [e["action"] for e in found] == actions, found
    return found


@pytest.fixture
def admin_user(stack):
    return create_user(stack, Role.ADMIN)


@pytest.fixture
def admin(stack, admin_user) -> Api:
    return bearer(stack, admin_user)


# -- every mutation of every existing function -------------------------------------------


def test_sign_in_and_sign_out_each_make_one_entry_by_the_user(stack):
    user = create_user(stack, Role.PATIENT)
    token_api = sign_in(stack, user)
    session_path = f"sessions/{sessions.id_for_cookie(token_api.cookie or '')}"
    assert token_api.delete("/session").status_code == 204

    created, revoked = wait_for(session_path, ["create", "update"])
    assert created["actor"] == revoked["actor"] == user.uid
    assert created["function"] == revoked["function"] == "session"
    assert created["requestId"]
    assert created["requestId"] != revoked["requestId"]
    assert set(revoked["changes"]) == {"revoked", "revokedAt", "endReason"}
    assert revoked["changes"]["revoked"] == {"before": False, "after": True}
    # the CSRF token is a credential: only its hash is in the log
    token = created["changes"]["csrfToken"]
    assert token["redacted"] is True
    assert token["after"].startswith("hmac-sha256:")


def test_a_first_sign_in_creates_the_profile_as_the_user(stack):
    from firebase_admin import auth

    email = f"new-{uuid.uuid4().hex[:10]}@test.alodoktor.test"
    record = auth.create_user(email=email, password="pw-12345678", app=clients.firebase_app())
    token = requests.post(
        f"{stack.auth_url}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=t",
        json={"email": email, "password": "pw-12345678", "returnSecureToken": True},
        timeout=10,
    ).json()["idToken"]
    response = requests.post(f"{stack.gateway_url}/session", json={"idToken": token}, timeout=30)
    assert response.status_code == 201, response.text
    cookie = session_cookie(response)["__session"].value

    (profile,) = wait_for(f"users/{record.uid}", ["create"])
    assert profile["actor"] == record.uid
    assert profile["changes"]["role"] == {"before": None, "after": "patient"}
    (session,) = wait_for(f"sessions/{sessions.id_for_cookie(cookie)}", ["create"])
    assert session["actor"] == record.uid


def test_account_administration_is_audited_as_the_admin(stack, admin, admin_user):
    email = f"doc-{uuid.uuid4().hex[:10]}@test.alodoktor.test"
    created = admin.post(
        "/admin-users",
        json={"email": email, "role": "doctor", "password": "pw-12345678", "displayName": "Dr A"},
    )
    assert created.status_code == 201, created.text
    uid = created.json()["profile"]["uid"]
    path = f"users/{uid}"
    wait_for(path, ["create"])

    changed = admin.request("PATCH", f"/admin-users/{uid}", json={"displayName": "Dr B"})
    assert changed.status_code == 200, changed.text
    wait_for(path, ["create", "update"])
    approved = admin.post(f"/admin-users/{uid}/approval", json={"decision": "approve"})
    assert approved.status_code == 200, approved.text
    wait_for(path, ["create", "update", "update"])
    assert admin.delete(f"/admin-users/{uid}").status_code == 204

    create, rename, approve, delete = wait_for(path, ["create", "update", "update", "delete"])
    assert {e["actor"] for e in (create, rename, approve, delete)} == {admin_user.uid}
    assert {e["function"] for e in (create, rename, approve, delete)} == {"admin-users"}
    assert rename["changes"]["displayName"] == {"before": "Dr A", "after": "Dr B"}
    assert approve["changes"]["approved"] == {"before": False, "after": True}
    assert delete["changes"]["email"] == {"before": email, "after": None}
    assert create["at"] < rename["at"] < approve["at"] < delete["at"]


def test_revoking_all_sessions_and_a_reset_link_are_audited(stack, admin, admin_user):
    user = create_user(stack, Role.PATIENT)
    first, second = sign_in(stack, user), sign_in(stack, user)
    paths = [f"sessions/{sessions.id_for_cookie(a.cookie or '')}" for a in (first, second)]
    assert first.post("/session/revoke-all").status_code == 200
    for path in paths:
        _, revoked = wait_for(path, ["create", "update"])
        assert revoked["actor"] == user.uid
        assert revoked["changes"]["revoked"] == {"before": False, "after": True}

    assert admin.post(f"/admin-users/{user.uid}/password-reset").status_code == 200
    from google.cloud.firestore import FieldFilter

    (queued,) = (
        clients.db()
        .collection("notifications")
        .where(filter=FieldFilter("uid", "==", user.uid))
        .stream()
    )
    (entry,) = wait_for(queued.reference.path, ["create"])
    assert entry["actor"] == admin_user.uid
    # the reset link is a credential: hashed, never in the log
    assert entry["changes"]["data"]["redacted"] is True
    assert "oobCode" not in str(entry)


def test_a_profile_update_is_audited_as_its_owner(stack):
    user = create_user(stack, Role.PATIENT)
    wait_for(f"users/{user.uid}", ["create"])  # made by the test helper, as "test"
    api = bearer(stack, user)
    response = api.request("PATCH", "/users/me", json={"displayName": "Sari"})
    assert response.status_code == 200, response.text

    created, updated = wait_for(f"users/{user.uid}", ["create", "update"])
    assert created["actor"] == "test"
    assert updated["actor"] == user.uid
    assert updated["function"] == "users"
    assert updated["requestId"] == response.headers["X-Request-Id"]
    assert updated["changes"]["displayName"] == {"before": None, "after": "Sari"}


def test_quick_successive_writes_each_get_their_own_entry_chained_value_to_value(stack):
    """As Eventarc, every write is its own event, however fast they follow one another: five
    updates of one profile make five entries, each one's `before` the previous `after`."""
    user = create_user(stack, Role.PATIENT)
    wait_for(f"users/{user.uid}", ["create"], settle=False)
    api = bearer(stack, user)
    for i in range(5):
        answer = api.request("PATCH", "/users/me", json={"displayName": f"Name {i}"})
        assert answer.status_code == 200, answer.text
    found = wait_for(f"users/{user.uid}", ["create"] + ["update"] * 5)
    names = [e["changes"]["displayName"] for e in found[1:]]
    assert [n["after"] for n in names] == [f"Name {i}" for i in range(5)]
    assert [n["before"] for n in names] == [None] + [f"Name {i}" for i in range(4)]


def test_a_burst_of_writes_from_many_writers_is_audited_once_each(stack):
    """What the Firestore emulator posts as each write commits reaches the trigger once per
    write: 60 documents created from 20 threads at once, one entry each, none twice."""
    db = clients.db()
    ids = [f"burst-{uuid.uuid4().hex}" for _ in range(60)]

    def create(doc_id: str) -> None:
        store.create(db.collection("slots").document(doc_id), {"n": 1}, by="burst")

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(create, ids))
    for doc_id in ids[:-1]:
        wait_for(f"slots/{doc_id}", ["create"], settle=False)
    (last,) = wait_for(f"slots/{ids[-1]}", ["create"])  # and after a pause, no second entry
    assert last["actor"] == "burst"


def test_a_write_without_a_stamp_is_the_systems(stack):
    ref = clients.db().collection("settings").document(f"s-{uuid.uuid4().hex}")
    ref.set({"value": 1})
    (entry,) = wait_for(ref.path, ["create"])
    assert entry["actor"] == "system"
    assert entry["function"] is None


# -- delivery ------------------------------------------------------------------------------


@dataclass
class FakeSnapshot:
    path: str
    data: dict[str, Any]
    update_time: datetime

    @property
    def reference(self) -> Any:
        return SimpleNamespace(path=self.path)

    @property
    def create_time(self) -> datetime:
        return self.update_time

    def to_dict(self) -> dict[str, Any]:
        return self.data


def _event(path: str) -> tuple[relay.Event, datetime]:
    at = datetime.now(UTC)
    old = FakeSnapshot(path, {"status": "draft", "notes": "sore throat"}, at - timedelta(1))
    new = FakeSnapshot(
        path,
        {
            "status": "issued",
            "notes": "sore throat, fever",
            "issuedAt": at,
            "_meta": {"by": "doc-1", "requestId": "req-12345678", "function": "prescriptions"},
        },
        at,
    )
    return relay.cloud_event("demo-alodoktor", path, old, new, at), at


def test_the_relays_cloud_event_is_what_eventarc_sends_and_what_the_trigger_reads():
    path = "prescriptions/p-1"
    event, at = _event(path)

    h = event.headers
    assert h["Content-Type"] == "application/protobuf"
    assert h["ce-specversion"] == "1.0"
    assert h["ce-type"] == "google.cloud.firestore.document.v1.written"
    assert (
        h["ce-source"] == "//firestore.googleapis.com/projects/demo-alodoktor/databases/(default)"
    )
    assert h["ce-subject"] == f"documents/{path}"
    assert h["ce-document"] == path
    assert h["ce-database"] == h["ce-namespace"] == "(default)"
    assert h["ce-project"] == "demo-alodoktor"
    assert h["ce-location"]
    assert h["ce-id"]
    assert datetime.fromisoformat(h["ce-time"].replace("Z", "+00:00")) == at

    from google.events.cloud.firestore_v1.types import DocumentEventData

    data = DocumentEventData.deserialize(event.body)
    name = f"projects/demo-alodoktor/databases/(default)/documents/{path}"
    assert data.value.name == data.old_value.name == name
    assert list(data.update_mask.field_paths) == ["_meta", "issuedAt", "notes", "status"]

    # what functions-framework hands the trigger: the attributes without ce-, the raw body
    attributes = {k.removeprefix("ce-"): v for k, v in h.items() if k.startswith("ce-")}
    change = firestore_events.parse(attributes, event.body)
    assert change.path == path
    assert change.event_id == h["ce-id"]
    assert change.at == at
    assert change.before == {"status": "draft", "notes": "sore throat"}
    assert change.after is not None
    assert change.after["issuedAt"] == at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert change.after["_meta"]["by"] == "doc-1"


def test_a_redelivered_event_makes_no_second_entry(stack):
    path = f"prescriptions/p-{uuid.uuid4().hex}"
    event, _ = _event(path)
    url = f"{stack.gateway_url}/audit-trigger"
    for _ in range(2):
        response = requests.post(url, data=event.body, headers=event.headers, timeout=60)
        assert response.status_code == 200, response.text

    (entry,) = entries(path)
    assert entry["eventId"] == event.id
    assert (entry["action"], entry["actor"], entry["function"]) == (
        "update",
        "doc-1",
        "prescriptions",
    )
    notes = entry["changes"]["notes"]
    assert notes["redacted"] is True
    assert "fever" not in str(entry)
    assert entry["changes"]["status"] == {"before": "draft", "after": "issued"}


def test_a_malformed_event_is_acknowledged_and_ignored(stack):
    response = requests.post(
        f"{stack.gateway_url}/audit-trigger",
        data=b"\xff\xfe not protobuf",
        headers={
            "Content-Type": "application/protobuf",
            "ce-id": uuid.uuid4().hex,
            "ce-source": "//firestore.googleapis.com/projects/x/databases/(default)",
            "ce-specversion": "1.0",
            "ce-type": firestore_events.EVENT_TYPE,
            "ce-document": "users/nobody",
        },
        timeout=30,
    )
    assert response.status_code == 200


# -- many writers, sealers, late events --------------------------------------------------


def scheduler(stack) -> Api:
    return service_api(stack, Service.SCHEDULER, "audit")


def proof_of(api: Api, entry_id: str) -> requests.Response:
    return api.get(f"/audit/entries/{entry_id}/proof")


def sealed(api: Api, sealer: Api, entry_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Seal (as the scheduler would) until every entry has a proof; the proofs by entry id."""
    proofs: dict[str, dict[str, Any]] = {}

    def seal_and_look() -> list[str]:
        answer = sealer.post("/audit/seal")
        assert answer.status_code == 200, answer.text
        for entry_id in entry_ids:
            if entry_id not in proofs:
                got = proof_of(api, entry_id)
                if got.status_code == 200:
                    proofs[entry_id] = got.json()
                else:
                    problem(got, 409, "not_sealed")
        return [e for e in entry_ids if e not in proofs]

    eventually(seal_and_look, lambda left: not left, "entries sealed")
    return proofs


def seal_past(api: Api, sealer: Api, entry_ids: list[str]) -> dict[str, int]:
    """Seal until the checkpoints reach past every given entry; the checkpoint each is in,
    found by the ranges the checkpoints say they seal (exactly one each)."""
    keys = {}
    for entry_id in entry_ids:
        stored = audit.get_entry(entry_id)
        assert stored is not None, entry_id
        keys[entry_id] = cps.entry_key(entry_id, stored)
    target = max(keys.values())

    def newest() -> list[dict[str, Any]]:
        answer = sealer.post("/audit/seal")
        assert answer.status_code == 200, answer.text
        page = api.get("/audit/checkpoints", params={"limit": 1})
        assert page.status_code == 200, page.text
        return list(page.json()["items"])

    def through(items: list[dict[str, Any]]) -> bool:
        return bool(items) and cps.cursor_key("entries", items[0]["range"]["through"]) >= target

    eventually(newest, through, "the entries sealed")
    checkpoints, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api.get("/audit/checkpoints", params=params).json()
        checkpoints += [c for c in page["items"] if c["kind"] == "entries"]
        cursor = page["nextCursor"]
        start = checkpoints[-1]["range"]["from"] if checkpoints else None
        if cursor is None or start is None or cps.cursor_key("entries", start) < min(keys.values()):
            break
    holders: dict[str, int] = {}
    for entry_id, key in keys.items():
        found = [
            c["n"]
            for c in checkpoints
            if (c["range"]["from"] is None or cps.cursor_key("entries", c["range"]["from"]) < key)
            and key <= cps.cursor_key("entries", c["range"]["through"])
        ]
        assert len(found) == 1, (entry_id, found)
        holders[entry_id] = found[0]
    return holders


def chain_verifies(api: Api) -> dict[str, Any]:
    """GET /audit/verify batch by batch from checkpoint 1: every checkpoint verifies."""
    first, total = 1, 0
    while True:
        verdict = api.get("/audit/verify", params={"from": first, "limit": 50})
        assert verdict.status_code == 200, verdict.text
        body = verdict.json()
        assert body["ok"] is True, body
        total += body["count"]
        if body["next"] is None:
            return {**body, "total": total}
        first = body["next"]


def range_verifies(api: Api, n: int) -> int:
    """GET /audit/checkpoints/<n>/verify, chunk batch by chunk batch; the entries verified."""
    chunk, entries_verified = 0, 0
    while chunk is not None:
        verdict = api.get(f"/audit/checkpoints/{n}/verify", params={"chunk": chunk})
        assert verdict.status_code == 200, verdict.text
        body = verdict.json()
        assert body["ok"] is True, body
        entries_verified += body["entries"]
        chunk = body["nextChunk"]
    return entries_verified


def _event_for(path: str, at: datetime | None = None) -> relay.Event:
    when = at or datetime.now(UTC)
    old = FakeSnapshot(path, {"status": "draft"}, when - timedelta(1))
    new = FakeSnapshot(
        path, {"status": "issued", "_meta": {"by": "doc-1", "function": "prescriptions"}}, when
    )
    return relay.cloud_event("demo-alodoktor", path, old, new, when)


def test_many_audited_writes_at_once_all_land_with_no_contention(stack, admin):
    """60 changes delivered to the trigger at once and 40 reads of health data recorded at
    once: every one answers without error and lands as its own entry (no head document to
    contend on), then all are sealed and each is provably in exactly one checkpoint."""
    url = f"{stack.gateway_url}/audit-trigger"
    events = [_event_for(f"prescriptions/burst-{uuid.uuid4().hex}") for _ in range(60)]

    def deliver(event: relay.Event) -> int:
        return requests.post(url, data=event.body, headers=event.headers, timeout=120).status_code

    def read(i: int) -> str:
        (entry,) = audit.record_reads([f"prescriptions/burst-read-{i}"], "burst", actor="doc-1")
        return str(entry["id"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        delivered = pool.map(deliver, events)
        read_ids = list(pool.map(read, range(40)))
        assert list(delivered) == [200] * 60

    ids = [audit_log.event_entry_id(e.id) for e in events] + read_ids
    holders = seal_past(admin, scheduler(stack), ids)  # each entry there, in one checkpoint
    for n in sorted(set(holders.values())):
        assert range_verifies(admin, n) >= 1
    chain_verifies(admin)
    keys = dict([_public_key(stack)])
    for entry_id in ids[::20]:  # and provably so
        got = proof_of(admin, entry_id)
        assert got.status_code == 200, got.text
        assert got.json()["checkpoint"]["n"] == holders[entry_id]
        assert cps.proof_problem(got.json(), keys) is None


def test_concurrent_audited_requests_are_each_recorded_by_their_user(stack, admin):
    users = [create_user(stack, Role.PATIENT) for _ in range(10)]
    apis = [bearer(stack, u) for u in users]
    for u in users:
        wait_for(f"users/{u.uid}", ["create"], settle=False)

    def rename(i: int) -> int:
        return apis[i].request("PATCH", "/users/me", json={"displayName": f"N{i}"}).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert list(pool.map(rename, range(10))) == [200] * 10
    for i, u in enumerate(users):
        _, update = wait_for(f"users/{u.uid}", ["create", "update"], settle=False)
        assert update["actor"] == u.uid
        assert update["changes"]["displayName"]["after"] == f"N{i}"


def test_sealing_while_entries_are_written_loses_and_repeats_nothing(stack, admin):
    """Writers keep writing while two sealers seal over and over: afterwards every entry is
    in exactly one checkpoint, the chain and every new range verify."""
    stop = threading.Event()
    written: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        while not stop.is_set():
            got = audit.record_reads([f"prescriptions/race-{n}"], "seal race", actor="race")
            with lock:
                written.extend(str(e["id"]) for e in got)

    sealer_api = scheduler(stack)
    answers: list[dict[str, Any]] = []

    def sealer() -> None:
        while not stop.is_set():
            answer = sealer_api.post("/audit/seal")
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())

    with ThreadPoolExecutor(max_workers=6) as pool:
        jobs = [pool.submit(writer, n) for n in range(4)] + [pool.submit(sealer) for _ in range(2)]
        try:
            eventually(
                lambda: [a for a in answers if a["created"]],
                lambda made: len(made) >= 3 and len(written) >= 40,
                "seals made while entries were written",
            )
        finally:
            stop.set()
        for job in jobs:
            job.result()

    holders = seal_past(admin, sealer_api, written)
    made = [a["checkpoint"]["n"] for a in answers if a["created"]]
    assert len(made) == len(set(made))  # no checkpoint made twice
    for n in sorted(set(holders.values())):
        range_verifies(admin, n)
    chain_verifies(admin)


def test_sealers_at_once_make_one_checkpoint(stack, admin):
    sealer_api = scheduler(stack)
    for _ in range(3):
        audit.record_reads([f"prescriptions/two-{i}" for i in range(5)], "two sealers", actor="x")
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: sealer_api.post("/audit/seal"), range(4)))
        assert [a.status_code for a in answers] == [200] * 4
        bodies = [a.json() for a in answers]
        assert sum(b["created"] for b in bodies) <= 1
        shown = {b["checkpoint"]["n"] for b in bodies if b["checkpoint"]}
        assert len(shown) <= 1, bodies
    numbers = []
    page = admin.get("/audit/checkpoints", params={"limit": 100}).json()
    numbers = [c["n"] for c in page["items"]]
    assert len(numbers) == len(set(numbers))
    chain_verifies(admin)


def test_a_late_event_goes_into_the_next_seal(stack, admin):
    """An event delivered hours after its change: its entry keeps the change's time, lands
    after the checkpoints already made and is sealed by the next one; those before it still
    verify."""
    sealer_api = scheduler(stack)
    early = audit.record_read("prescriptions/late-early", "late test", actor="x")
    before = sealed(admin, sealer_api, [str(early["id"])])[str(early["id"])]["checkpoint"]["n"]

    happened = datetime.now(UTC) - timedelta(hours=3)
    event = _event_for(f"prescriptions/late-{uuid.uuid4().hex}", happened)
    answer = requests.post(
        f"{stack.gateway_url}/audit-trigger", data=event.body, headers=event.headers, timeout=60
    )
    assert answer.status_code == 200
    late_id = audit_log.event_entry_id(event.id)
    proof = sealed(admin, sealer_api, [late_id])[late_id]
    assert proof["checkpoint"]["n"] > before
    entry = admin.get(f"/audit/entries/{late_id}").json()
    assert datetime.fromisoformat(entry["at"].replace("Z", "+00:00")) == happened
    assert range_verifies(admin, before) >= 1
    chain_verifies(admin)


def _public_key(stack) -> tuple[str, bytes]:
    from shared.audit import signing

    (key,) = signing.SigningKeys.parse(stack.env["AUDIT_SIGNING_KEY"]).keys
    return key.key_id, key.public


def _verify_cli(stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.audit_verify", *args],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_an_inclusion_proof_verifies_with_its_checkpoint_alone(stack, admin, tmp_path):
    entry = audit.record_read("prescriptions/p-proof", "proof test", actor="doc-9")
    entry_id = str(entry["id"])
    problem(proof_of(admin, entry_id), 409, "not_sealed")
    problem(proof_of(admin, "r-nothing-here"), 404)
    proof = sealed(admin, scheduler(stack), [entry_id])[entry_id]
    assert json.loads(proof["leaf"])["id"] == entry_id

    printed = _verify_cli(stack, "--print-public-key")
    assert printed.returncode == 0, printed.stderr
    key_id, public = printed.stdout.split()
    assert key_id == proof["checkpoint"]["keyId"]
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(proof))
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_", "FIRESTORE_"))}

    def offline(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tools.audit_verify",
                "--proof",
                str(path),
                "--public-key",
                public,
            ],
            cwd=ROOT,
            env=bare,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    done = offline(good)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"entry {entry_id} is entry {proof['index']} of checkpoint" in done.stdout
    altered = [
        {**proof, "leaf": proof["leaf"].replace("doc-9", "doc-8")},
        {**proof, "index": proof["index"] + 1},
        {**proof, "path": list(reversed(proof["path"]))} if len(proof["path"]) > 1 else None,
        {**proof, "checkpoint": {**proof["checkpoint"], "root": "00" * 32}},
    ]
    for i, bad in enumerate(a for a in altered if a is not None):
        path = tmp_path / f"bad-{i}.json"
        path.write_text(json.dumps(bad))
        done = offline(path)
        assert done.returncode == 1, (i, done.stdout)
        assert "BROKEN" in done.stdout


def test_the_scheduler_seals_checks_and_exports_and_the_export_verifies_offline(stack, admin):
    sealer_api = scheduler(stack)
    entry = audit.record_read("prescriptions/p-export", "export test", actor="doc-9")
    sealed(admin, sealer_api, [str(entry["id"])])
    checked = sealer_api.post("/audit/check", params={"chunks": 400})
    assert checked.status_code == 200, checked.text
    assert checked.json()["ok"] is True, checked.json()
    assert checked.json()["newest"] >= 1
    exported = sealer_api.post("/audit/export", params={"checkpoints": 100})
    assert exported.status_code == 200, exported.text
    assert exported.json()["problems"] == []
    target = Path(stack.env["AUDIT_EXPORT_URL"])
    done = _verify_cli(stack, "--export", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "entries verified" in done.stdout
    # the log in Firestore, whole, by the same tool
    done = _verify_cli(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    # the scheduler runs the jobs, it does not read the log
    problem(sealer_api.get("/audit"), 403, "service_not_allowed")
    problem(sealer_api.get(f"/audit/entries/{entry['id']}"), 403, "service_not_allowed")


def test_checkpoints_are_listed_and_shown_with_their_signed_document(stack, admin):
    entry = audit.record_read("prescriptions/p-cp", "checkpoint test", actor="doc-9")
    proof = sealed(admin, scheduler(stack), [str(entry["id"])])[str(entry["id"])]
    n = proof["checkpoint"]["n"]
    listed = admin.get("/audit/checkpoints", params={"limit": 5})
    assert listed.status_code == 200, listed.text
    numbers = [c["n"] for c in listed.json()["items"]]
    assert numbers == sorted(numbers, reverse=True)
    shown = admin.get(f"/audit/checkpoints/{n}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["document"] == proof["checkpoint"]
    assert shown.json()["hash"] == proof["checkpoint"]["hash"]
    problem(admin.get("/audit/checkpoints/999999999999"), 404)
    problem(admin.get("/audit/checkpoints/first"), 404)
    problem(admin.get(f"/audit/checkpoints/{n}/verify", params={"chunks": 99}), 400)


# -- reads of health data ------------------------------------------------------------------


def test_a_recorded_read_is_an_entry_of_its_own(stack, admin):
    doctor = f"doc-{uuid.uuid4().hex[:8]}"
    ctx = RequestContext(request_id="req-read-12345", function="prescriptions")
    ctx.principal = Principal(doctor, None, Role.DOCTOR, True, None, 0)
    token = context.bind(ctx)
    try:
        entry = audit.record_read("prescriptions/p-42", "view prescription")
    finally:
        context.unbind(token)
    assert (entry["action"], entry["actor"], entry["function"], entry["requestId"]) == (
        "read",
        doctor,
        "prescriptions",
        "req-read-12345",
    )
    listed = admin.get("/audit", params={"actor": doctor, "action": "read"}).json()["items"]
    assert [(e["resource"], e["reason"]) for e in listed] == [
        ("prescriptions/p-42", "view prescription")
    ]
    assert listed[0]["keyId"] == audit.hash_keys().current.key_id
    with pytest.raises(ValueError, match="document path"):
        audit.record_read("prescriptions", "no id")


def test_an_entry_as_a_fhir_audit_event(stack, admin):
    entry = audit.record_read("prescriptions/p-fhir", "view prescription", actor="doc-7")
    event = admin.get(f"/audit/entries/{entry['id']}/fhir")
    assert event.status_code == 200, event.text
    body = event.json()
    assert (body["resourceType"], body["id"], body["action"]) == ("AuditEvent", entry["id"], "R")
    assert body["agent"][0]["who"]["identifier"]["value"] == "doc-7"
    assert body["entity"][0]["what"]["reference"] == "prescriptions/p-fhir"
    assert body["purposeOfEvent"] == [{"text": "view prescription"}]
    problem(admin.get("/audit/entries/r-none/fhir"), 404)


# -- the admin routes ----------------------------------------------------------------------


def test_admins_page_through_entries_newest_first_and_by_time(stack, admin):
    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    for name in ("A", "B", "C"):
        assert api.request("PATCH", "/users/me", json={"displayName": name}).status_code == 200
    path = f"users/{user.uid}"
    found = eventually(lambda: entries(path), lambda got: len(got) == 4, f"audit entries of {path}")

    seen, cursor = [], None
    while True:
        params = {"resource": path, "actor": user.uid, "action": "update", "limit": 1}
        page = admin.get("/audit", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["nextCursor"]
        if cursor is None:
            break
    names = [e["changes"]["displayName"]["after"] for e in seen]
    assert sorted(names) == ["A", "B", "C"]
    assert [e["at"] for e in seen] == sorted((e["at"] for e in seen), reverse=True)
    assert all(len(e["leafHash"]) == 64 for e in seen)

    created = min(found, key=lambda e: e["at"])
    since = created["at"] + timedelta(microseconds=1)
    later = admin.get("/audit", params={"resource": path, "since": since.isoformat()})
    assert later.status_code == 200, later.text
    assert len(later.json()["items"]) == 3
    before = admin.get("/audit", params={"resource": path, "until": since.isoformat()})
    assert [e["action"] for e in before.json()["items"]] == ["create"]
    problem(admin.get("/audit", params={"action": "erase"}), 400, "validation_failed")


@pytest.mark.parametrize("role", [Role.PATIENT, Role.DOCTOR, Role.CLINIC, Role.PHARMACY])
def test_only_admins_read_the_log(stack, role):
    api = bearer(stack, create_user(stack, role))
    for method, path in [
        ("GET", "/audit"),
        ("GET", "/audit/verify"),
        ("GET", "/audit/checkpoints"),
        ("GET", "/audit/checkpoints/1"),
        ("GET", "/audit/checkpoints/1/verify"),
        ("GET", "/audit/entries/r-1"),
        ("GET", "/audit/entries/r-1/proof"),
        ("GET", "/audit/entries/r-1/fhir"),
        ("POST", "/audit/seal"),
        ("POST", "/audit/check"),
        ("POST", "/audit/export"),
    ]:
        problem(api.request(method, path), 403, "role_not_allowed")
    problem(Api(stack.gateway_url).get("/audit"), 401)
    problem(Api(stack.gateway_url).post("/audit/seal"), 401)

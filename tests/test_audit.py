"""The audit log end to end: the relay posts Firestore changes as Eventarc would, the trigger
chains one entry per change, admins query and verify it.

Delivery is asynchronous, so tests poll for the entries they expect (with a generous timeout,
the machine is shared) and never assert how long anything took.
"""

from __future__ import annotations

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
from shared.audit import events as firestore_events
from shared.audit import service as audit
from shared.identity import sessions
from shared.platform import clients, context, store
from shared.platform.context import Principal, RequestContext, Role
from tests.support import (
    Api,
    bearer,
    create_user,
    eventually,
    problem,
    session_cookie,
    sign_in,
)

ROOT = Path(__file__).resolve().parent.parent


def entries(resource: str) -> list[dict[str, Any]]:
    rows, _ = audit.list_entries(resource=resource, limit=100, cursor=None)
    return [data for _, data in rows]


def _written(entry: dict[str, Any]) -> tuple[str, int]:
    return (entry["at"], entry["seq"])


def wait_for(resource: str, actions: list[str], *, settle: bool = True) -> list[dict[str, Any]]:
    """The entries of `resource` in the order of the writes, once they are exactly `actions`.

    Events may be delivered (and so chained) out of order; `at` is when the write happened.

    With `settle`, a further look after the expected entries appear finds no extra one: a
    second entry for the same change would have been delivered alongside the first.
    """
    found = eventually(
        lambda: sorted(entries(resource), key=_written),
        lambda got: len(got) >= len(actions),
        f"audit entries of {resource}",
    )
    if settle:
        time.sleep(1.5)
    found = sorted(entries(resource), key=_written)
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
    assert token["after"].startswith("sha256:")


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


# -- the chain -----------------------------------------------------------------------------


def test_concurrent_writes_keep_one_unbroken_chain(stack, admin):
    users = [create_user(stack, Role.PATIENT) for _ in range(20)]
    apis = [bearer(stack, u) for u in users]
    for u in users:
        wait_for(f"users/{u.uid}", ["create"], settle=False)

    def rename(i: int) -> int:
        return apis[i].request("PATCH", "/users/me", json={"displayName": f"N{i}"}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(rename, range(20))) == [200] * 20

    seqs = []
    for u in users:
        _, update = wait_for(f"users/{u.uid}", ["create", "update"], settle=False)
        assert update["actor"] == u.uid
        seqs.append(update["seq"])
    assert len(set(seqs)) == 20
    verdict = admin.get("/audit/verify")
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["ok"] is True, verdict.json()
    assert verdict.json()["count"] >= max(seqs)


def test_verify_is_not_broken_by_entries_appended_while_it_runs(stack, admin):
    """Verify walks the chain while appends keep committing: every verdict is whole.

    Each verify reads the head, then pages through the entries; appends that commit in
    between must not be taken for a head that does not match its chain.
    """
    stop = threading.Event()
    appended = [0] * 4

    def append_until_stopped(n: int) -> None:
        while not stop.is_set():
            audit.record_read(f"prescriptions/race-{n}", "verify under appends", actor="race")
            appended[n] += 1

    verdicts: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=len(appended)) as pool:
        writers = [pool.submit(append_until_stopped, n) for n in range(len(appended))]
        try:
            eventually(lambda: sum(appended), lambda got: got >= 4, "appends under way")
            for i in range(12):
                if i % 2:
                    verdicts.append(audit.verify_chain().as_dict())
                else:
                    answer = admin.get("/audit/verify")
                    assert answer.status_code == 200, answer.text
                    verdicts.append(answer.json())
        finally:
            stop.set()
        for writer in writers:
            writer.result()

    assert [v for v in verdicts if not v["ok"]] == [], verdicts
    counts = [v["count"] for v in verdicts]
    assert counts == sorted(counts), counts
    assert counts[-1] > counts[0], counts  # the appends ran while verify did
    assert admin.get("/audit/verify").json()["ok"] is True


def _verify_cli(stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.audit_verify"],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _some_entry(stack) -> tuple[Any, dict[str, Any]]:
    ref = clients.db().collection("settings").document(f"t-{uuid.uuid4().hex}")
    store.set(ref, {"value": "x"}, by="tamper-test")
    (entry,) = wait_for(ref.path, ["create"])
    rows, _ = audit.list_entries(resource=ref.path, limit=1, cursor=None)
    ((entry_id, _),) = rows
    return clients.db().collection(audit.COLLECTION).document(entry_id), entry


def test_editing_an_entry_is_found_by_verify_at_that_entry(stack, admin):
    ref, entry = _some_entry(stack)
    try:
        ref.update({"actor": "someone-else"})
        verdict = admin.get("/audit/verify").json()
        assert verdict["ok"] is False
        assert (verdict["brokenAt"], verdict["entryId"]) == (entry["seq"], ref.id)
        assert verdict["count"] == entry["seq"] - 1
        cli = _verify_cli(stack)
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert f"BROKEN at entry {entry['seq']} ({ref.id})" in cli.stdout
    finally:
        ref.set(entry)
    assert admin.get("/audit/verify").json()["ok"] is True
    cli = _verify_cli(stack)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith("ok: ")


def test_deleting_an_entry_is_found_by_verify_at_that_entry(stack, admin):
    ref, entry = _some_entry(stack)
    try:
        ref.delete()
        verdict = admin.get("/audit/verify").json()
        assert verdict["ok"] is False
        assert verdict["brokenAt"] == entry["seq"]
        assert "missing" in verdict["reason"]
    finally:
        ref.set(entry)
    assert admin.get("/audit/verify").json()["ok"] is True


# -- reads of health data ------------------------------------------------------------------


def test_a_recorded_read_joins_the_chain(stack, admin):
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
    assert admin.get("/audit/verify").json()["ok"] is True
    with pytest.raises(ValueError, match="document path"):
        audit.record_read("prescriptions", "no id")


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
    assert all(len(e["hash"]) == 64 for e in seen)

    created = min(found, key=lambda e: e["seq"])
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
    problem(api.get("/audit"), 403, "role_not_allowed")
    problem(api.get("/audit/verify"), 403, "role_not_allowed")
    problem(Api(stack.gateway_url).get("/audit"), 401)

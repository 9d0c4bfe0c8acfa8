"""An export's build (issue 27): a Cloud Tasks job, one bounded part a task, its progress on
the request, then the download part by part; on the local stack's Cloud Tasks emulator."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from shared.platform import clients
from shared.platform.context import Role, Service
from shared.privacy import service
from tests.support import Api, bearer, create_user, problem, service_api

TOKENS = 450  # more than two pages' worth in one step of the walk


def _many_devices(uid: str, n: int) -> None:
    db = clients.db()
    for start in range(0, n, 400):
        batch = db.batch()
        for i in range(start, min(start + 400, n)):
            batch.set(
                db.collection("deviceTokens").document(f"{uid}-{i:04d}-{uuid.uuid4().hex[:6]}"),
                {"uid": uid, "token": f"tok-{uid}-{i}", "platform": "web"},
            )
        batch.commit()


def _built(api: Api, request_id: str) -> dict[str, Any]:
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = api.get(f"/privacy/exports/{request_id}")
        assert shown.status_code == 200, shown.text
        build = shown.json()["build"]
        seen.append(build["parts"])
        if build["state"] == "done":
            assert seen == sorted(seen), "the parts built only grow"
            return dict(shown.json())
        time.sleep(0.3)
    raise AssertionError(f"the export was never built: {seen}")


@pytest.fixture(scope="module")
def large(stack):
    user = create_user(stack, Role.PATIENT)
    _many_devices(user.uid, TOKENS)
    return user


def test_a_large_export_is_built_in_parts_and_downloaded(stack, large):
    api = bearer(stack, large)
    created = api.post("/privacy/exports")
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert created.json()["build"]["state"] in ("queued", "building", "done")
    assert created.json()["build"]["steps"] > 0

    shown = _built(api, request_id)
    build = shown["build"]
    assert build["parts"] >= 3  # 200 documents a part at most
    assert build["step"] == build["steps"]
    assert build["download"] == f"/privacy/exports/{request_id}/parts/0"
    assert build["expiresAt"] > build["finishedAt"]
    assert shown["state"] == "done"

    items: list[dict[str, Any]] = []
    url: str | None = build["download"]
    while url:
        part = api.get(url)
        assert part.status_code == 200, part.text
        items += part.json()["items"]
        url = part.json()["next"]
    assert len(items) == build["records"]
    devices = [i["id"] for i in items if i["collection"] == "deviceTokens"]
    assert len(devices) == TOKENS
    assert len(set(devices)) == TOKENS, "no record twice"
    assert any(i["collection"] == "users" and i["id"] == large.uid for i in items)


def test_the_pages_go_past_a_step_longer_than_a_page(stack, large):
    """The same walk downloaded page by page (a step longer than a page failed on its second
    page before: its cursor was no cursor Firestore's client takes)."""
    api = bearer(stack, large)
    request_id = api.post("/privacy/exports").json()["id"]
    devices: list[str] = []
    cursor = None
    for _ in range(20):
        page = api.get(
            f"/privacy/exports/{request_id}/data", params={"cursor": cursor} if cursor else {}
        )
        assert page.status_code == 200, page.text
        devices += [i["id"] for i in page.json()["items"] if i["collection"] == "deviceTokens"]
        cursor = page.json()["nextCursor"]
        if cursor is None:
            break
    assert len(devices) == TOKENS
    assert len(set(devices)) == TOKENS


def test_a_part_is_built_once_however_often_its_task_comes(stack):
    user = create_user(stack, Role.PATIENT)
    request_id = bearer(stack, user).post("/privacy/exports").json()["id"]
    _built(bearer(stack, user), request_id)
    again = service.build_part(request_id, 0, "test")
    assert again["state"] == "done"
    parts = (
        clients.db().collection("privacyRequests").document(request_id).collection("exportParts")
    )
    assert len(list(parts.stream())) == again["parts"]
    # Cloud Tasks' own delivery of an old part: answered, nothing built again.
    tasks = service_api(stack, Service.TASKS, "privacy")
    redelivered = tasks.post("/privacy/tasks/export", json={"requestId": request_id, "part": 0})
    assert redelivered.status_code == 200, redelivered.text
    assert len(list(parts.stream())) == again["parts"]
    gone = tasks.post("/privacy/tasks/export", json={"requestId": "nope", "part": 0})
    problem(gone, 404)


def test_parts_are_their_owners_alone_and_hostile_numbers_are_404(stack):
    owner, other = create_user(stack, Role.PATIENT), create_user(stack, Role.PATIENT)
    api = bearer(stack, owner)
    request_id = api.post("/privacy/exports").json()["id"]
    _built(api, request_id)
    problem(bearer(stack, other).get(f"/privacy/exports/{request_id}/parts/0"), 404)
    for part in ("x", "-1", "1" * 7, "٣", "99", "0x0"):
        problem(api.get(f"/privacy/exports/{request_id}/parts/{part}"), 404)
    # Only Cloud Tasks builds; an account may not.
    problem(api.post("/privacy/tasks/export", json={"requestId": request_id, "part": 0}), 403)
    bad = service_api(stack, Service.TASKS, "privacy")
    problem(bad.post("/privacy/tasks/export", json={"requestId": "a/b", "part": 0}), 400)
    problem(bad.post("/privacy/tasks/export", json={"requestId": request_id, "part": -1}), 400)


def test_an_expired_download_is_gone(stack):
    from shared.platform import store

    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    request_id = api.post("/privacy/exports").json()["id"]
    _built(api, request_id)
    ref = clients.db().collection("privacyRequests").document(request_id)
    build = ref.get().to_dict()["build"]
    store.update(ref, {"build": {**build, "expiresAt": build["finishedAt"]}}, by="test")
    problem(api.get(f"/privacy/exports/{request_id}/parts/0"), 404, "export_expired")


def test_an_erasure_deletes_the_accounts_built_exports(stack):
    from shared.privacy import erasure

    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    export_id = api.post("/privacy/exports").json()["id"]
    _built(api, export_id)
    parts = clients.db().collection("privacyRequests").document(export_id).collection("exportParts")
    assert list(parts.stream())
    erase_id = api.post("/privacy/erasure").json()["id"]
    assert erasure.erase(user.uid, "patient", erase_id, "test") is True
    assert list(parts.stream()) == []


def test_a_parts_health_records_are_read_on_the_audit_log(stack):
    from google.cloud.firestore import FieldFilter

    from shared.platform import clock, store

    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    prescription = clients.db().collection("prescriptions").document()
    store.create(
        prescription,
        {"patientUid": user.uid, "doctorUid": None, "status": "issued", "createdAt": clock.now()},
        by="test",
    )
    request_id = api.post("/privacy/exports").json()["id"]
    url: str | None = _built(api, request_id)["build"]["download"]
    downloaded: list[str] = []
    while url:
        part = api.get(url)
        assert part.status_code == 200, part.text
        downloaded += [f"{i['collection']}/{i['id']}" for i in part.json()["items"]]
        url = part.json()["next"]
    path = f"prescriptions/{prescription.id}"
    assert path in downloaded
    entries = clients.db().collection("audit").where(filter=FieldFilter("resource", "==", path))
    reads = [e.to_dict() or {} for e in entries.stream()]
    assert any(e["action"] == "read" and e["actor"] == user.uid for e in reads), reads


def test_a_build_still_going_when_its_account_is_erased_builds_nothing_more(stack):
    from shared.platform import store
    from shared.privacy import erasure

    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    export_id = api.post("/privacy/exports").json()["id"]
    _built(api, export_id)
    erase_id = api.post("/privacy/erasure").json()["id"]
    assert erasure.erase(user.uid, "patient", erase_id, "test") is True
    # As if its next part's task came after the erasure.
    ref = clients.db().collection("privacyRequests").document(export_id)
    build = {**ref.get().to_dict()["build"], "state": "building", "parts": 1, "cursor": None}
    store.update(ref, {"build": build}, by="test")
    assert service.build_part(export_id, 1, "test")["parts"] == 1
    assert list(ref.collection("exportParts").stream()) == []

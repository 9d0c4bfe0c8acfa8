"""Requests about personal data (`privacyRequests`, audited): exports and their pages, and the
admins' list with each request's legal deadline, state and who handled it.

An export is made as it is downloaded: each page is one bounded walk (`PAGE_DOCUMENTS`
documents at most) along `rules.steps`, from the cursor the last page gave, so no request does
unbounded work whatever the account holds; the request records how far its download got
(`progress`). The JSON pages carry every document as stored; the FHIR pages carry the clinical
records (the profile as Patient or Practitioner, appointments, prescriptions as
MedicationRequests) as an R4 Bundle of type `collection`.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.identity import access
from shared.platform import clients, clock, logs, pagination, settings, store
from shared.platform.context import Principal
from shared.platform.errors import BadRequest, Conflict, NotFound
from shared.privacy import rules

REQUESTS = "privacyRequests"
PAGE_DOCUMENTS = 200  # documents read per page, at most
READS_PER_DOCUMENT = 50  # read entries shown per health record per page, at most

log = logs.get("alodoktor.privacy")


def _db() -> Any:
    return clients.db()


def request_ref(request_id: str) -> Any:
    return _db().collection(REQUESTS).document(request_id)


def get_request(request_id: str) -> dict[str, Any] | None:
    snap = request_ref(request_id).get()
    return ({**(snap.to_dict() or {}), "id": snap.id}) if snap.exists else None


def new_request(
    principal: Principal,
    kind: rules.RequestKind,
    state: rules.RequestState,
    *,
    tx: Any = None,
    ref: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """Record a request (in `tx` when given, a batch its notice is queued in too)."""
    now = clock.now()
    ref = ref or _db().collection(REQUESTS).document()
    doc = {
        "uid": principal.uid,
        "role": principal.role.value,
        "kind": kind.value,
        "state": state.value,
        "requestedAt": now,
        "dueAt": rules.deadline(now, settings.get().privacy_request_deadline_days),
        "handledBy": None,
        "completedAt": None,
        "progress": None,
        **extra,
    }
    store.create(ref, doc, tx=tx, by=principal.uid)
    return {**doc, "id": ref.id}


# -- export pages -------------------------------------------------------------------------------


@dataclass
class Record:
    collection: str
    id: str
    data: dict[str, Any]
    health: bool = False


@dataclass
class ExportPage:
    records: list[Record]
    next_cursor: str | None
    step: int
    steps: int


def _query_step(step: rules.Step, after: str | None, limit: int) -> list[Any]:
    from google.cloud.firestore import FieldFilter

    collection = _db().collection(step.collection)
    if step.field is None:
        if after is not None:
            return []
        snap = collection.document(step.value).get()
        return [snap] if snap.exists else []
    query = collection.where(filter=FieldFilter(step.field, "==", step.value)).order_by("__name__")
    if after is not None:
        # By id: a DocumentReference is no cursor the client takes (it raised, a 500 on the
        # second page of any step longer than a page).
        query = query.start_after({"__name__": after})
    return list(query.limit(limit).stream())


def _reads_of(path: str) -> list[Any]:
    from google.cloud.firestore import FieldFilter, Query

    query = (
        _db()
        .collection("audit")
        .where(filter=FieldFilter("action", "==", "read"))
        .where(filter=FieldFilter("resource", "==", path))
        .order_by("at", direction=Query.DESCENDING)
        .limit(READS_PER_DOCUMENT)
    )
    return list(query.stream())


# Where the account is the record's patient (or the record is the account itself): its own
# health data. Anywhere else (a doctor's visits, a pharmacy's prescriptions) the record is
# someone else's health: the provider gets what concerns them, without it.
_OWN = (None, "patientUid")


def _for_the_account(step: rules.Step, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A stored record as an export gives it to the account: without the credentials the audit
    log redacts too (a session's secret digest and CSRF token, notices' links), and without
    other people's health data. Returns the record, and whether it carries health data (the
    pipeline writes the read entry of those)."""
    from shared.audit.rules import HEALTH_FIELDS, SECRET_FIELDS

    hidden = set(SECRET_FIELDS.get(step.collection, ()))
    own = step.field in _OWN
    if step.health and not own:
        hidden |= HEALTH_FIELDS
    kept = {k: v for k, v in data.items() if k not in hidden}
    return kept, step.health and own


def export_page(
    uid: str, cursor: str | None, *, clinical_only: bool = False, documents: int = PAGE_DOCUMENTS
) -> ExportPage:
    """Up to `documents` of what is held about `uid`, from `cursor` on."""
    walk = rules.steps(uid)
    try:
        at = rules.decode_cursor(cursor, len(walk))
    except rules.BadCursor:
        raise BadRequest(
            "This cursor is not one this export gave.", code="invalid_cursor"
        ) from None
    records: list[Record] = []
    budget = documents
    index, after = at.step, at.after
    while index < len(walk) and budget > 0:
        step = walk[index]
        if clinical_only and (step.reads or step.collection not in _CLINICAL):
            index, after = index + 1, None
            continue
        # A health record brings up to READS_PER_DOCUMENT read entries: fewer records a page.
        limit = min(budget, max(documents // 10, 1)) if step.reads else budget
        snaps = _query_step(step, after, limit)
        for snap in snaps:
            if step.reads:
                path = f"{step.collection}/{snap.id}"
                for read in _reads_of(path):
                    records.append(Record("audit", read.id, rules.plain(read.to_dict() or {})))
            else:
                data, health = _for_the_account(step, rules.plain(snap.to_dict() or {}))
                records.append(Record(step.collection, snap.id, data, health))
        budget -= len(snaps) * (10 if step.reads else 1)
        if step.field is not None and snaps and len(snaps) == limit:
            after = snaps[-1].id  # maybe more: this step goes on from here
            if budget <= 0:
                break
            continue
        index, after = index + 1, None
    done = index >= len(walk)
    next_cursor = None if done else rules.encode_cursor(rules.Cursor(index, after))
    return ExportPage(records, next_cursor, index, len(walk))


_CLINICAL = frozenset({"users", "appointments", "prescriptions"})


def fhir_resources(uid: str, role: str, records: list[Record]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in records:
        if r.collection == "users":
            out.append(
                rules.patient(uid, r.data) if role == "patient" else rules.practitioner(uid, r.data)
            )
        elif r.collection == "appointments":
            out.append(rules.appointment(r.id, r.data))
        elif r.collection == "prescriptions":
            out += rules.medication_requests(r.id, r.data)
    known = {res["id"] for res in out if res["resourceType"] == "Practitioner"}
    for practitioner in dict.fromkeys(rules.referenced_practitioners(out)):
        if practitioner not in known:
            out.append({"resourceType": "Practitioner", "id": practitioner})
            known.add(practitioner)
    return out


def record_progress(request_id: str, page: ExportPage, by: str) -> None:
    """How far the request's download got (a write only when a page moved it on)."""
    done = page.next_cursor is None
    update: dict[str, Any] = {"progress": {"step": page.step, "steps": page.steps}}
    if done:
        update |= {
            "state": rules.RequestState.DONE.value,
            "completedAt": clock.now(),
            "handledBy": by,
        }
    store.update(request_ref(request_id), update, by=by)


# -- the admins' list ---------------------------------------------------------------------------


def list_requests(
    *, state: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    from google.cloud.firestore import FieldFilter, Query

    collection = _db().collection(REQUESTS)
    query: Any = collection
    if state:
        query = query.where(filter=FieldFilter("state", "==", state))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("requestedAt", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [{**(s.to_dict() or {}), "id": s.id} for s in snaps], next_cursor


# -- the export's build (a Cloud Tasks job) ---------------------------------------------------
# POST /exports enqueues the build: one task a part, each one bounded walk (`export_page`)
# from where the last stopped, its records stored as a part of the request
# (`privacyRequests/{id}/exportParts/{n}`, compressed JSON, gone `EXPORT_DOWNLOAD_DAYS` after
# the build by a TTL policy); the request's `build` shows how far it got, then where to
# download it. Each task enqueues the next under a name of its own, so a delivery repeated by
# Cloud Tasks builds nothing twice and starts no second chain.

PARTS = "exportParts"
EXPORT_TASK = "/privacy/tasks/export"
MAX_PART_BYTES = 900_000  # a Firestore document holds 1 MiB


def part_ref(request_id: str, part: int) -> Any:
    return request_ref(request_id).collection(PARTS).document(f"{part:06d}")


def _task_id(request_id: str, part: int) -> str:
    return f"export-{request_id}-{part}"


def enqueue_part(request_id: str, part: int) -> bool:
    """Enqueue the task that builds part `part`; raises if Cloud Tasks cannot be asked."""
    from shared.integrations import cloud_tasks

    s = settings.get()
    if not (s.functions_base_url and s.tasks_service_account):
        raise RuntimeError("FUNCTIONS_BASE_URL or TASKS_SERVICE_ACCOUNT is not set")
    return cloud_tasks.enqueue(
        cloud_tasks.HttpTask(
            queue=s.privacy_queue,
            task_id=_task_id(request_id, part),
            url=f"{s.functions_base_url}{EXPORT_TASK}",
            body={"requestId": request_id, "part": part},
            service_account=s.tasks_service_account,
            audience=f"{s.functions_base_url}/privacy",
        )
    )


def start_build(request: dict[str, Any], by: str) -> dict[str, Any]:
    """Queue the build of a new export; the request as it is now. Cloud Tasks unreachable:
    the build shows `not_queued` (the pages can still be downloaded as they are made)."""
    build: dict[str, Any] = {
        "state": rules.BuildState.QUEUED.value,
        "parts": 0,
        "records": 0,
        "step": 0,
        "steps": len(rules.steps(request["uid"])),
        "cursor": None,
        "finishedAt": None,
        "expiresAt": None,
    }
    # Recorded before the task exists: written after, it could overwrite the progress of a
    # first part delivered at once (and leave the next part refused as early, for good).
    store.update(request_ref(request["id"]), {"build": build}, by=by)
    try:
        enqueue_part(request["id"], 0)
    except Exception:
        log.exception("export %s recorded but its build not queued", request["id"])
        build["state"] = rules.BuildState.NOT_QUEUED.value
        store.update(request_ref(request["id"]), {"build": build}, by=by)
    return {**request, "build": build}


def _encode(records: list[Record]) -> bytes:
    raw = json.dumps(
        [[r.collection, r.id, r.data, r.health] for r in records], separators=(",", ":")
    ).encode()
    return zlib.compress(raw, 6)


def decode_part(blob: bytes) -> list[Record]:
    return [Record(c, i, d, bool(h)) for c, i, d, h in json.loads(zlib.decompress(blob))]


def _fitting_page(uid: str, cursor: str | None) -> tuple[ExportPage, bytes]:
    """The next page from `cursor` and its records as stored: a page of large documents may
    not fit in one part, and is walked again with fewer documents until it does."""
    documents = PAGE_DOCUMENTS
    while True:
        page = export_page(uid, cursor, documents=documents)
        blob = _encode(page.records)
        if len(blob) <= MAX_PART_BYTES or documents == 1:
            return page, blob
        documents = max(documents // 4, 1)


def build_part(request_id: str, part: int, by: str) -> dict[str, Any]:
    """Build part `part` of an export (a task's delivery); the request's build as it is now.
    A part built already is not built again; a build that is done does nothing."""
    req = get_request(request_id)
    if req is None or req.get("kind") != rules.RequestKind.EXPORT.value:
        raise NotFound("No such export.")
    build = dict(req.get("build") or {})
    if build.get("state") == rules.BuildState.DONE.value or int(build.get("parts") or 0) > part:
        return build
    if int(build.get("parts") or 0) < part:
        raise Conflict("An earlier part of this export is not built yet.", code="part_early")
    if (account := access.get(req["uid"])) is not None and account.deleted:
        # Erased while its build went on (the erasure deleted the parts built so far): nothing
        # more is built, and the next part is not queued (its task is this one).
        log.info("export %s not built further: its account is erased", request_id)
        return build
    page, blob = _fitting_page(req["uid"], build.get("cursor"))
    kept = len(page.records)
    now = clock.now()
    done = page.next_cursor is None
    s = settings.get()
    expires = now + timedelta(days=s.export_download_days)
    build |= {
        "state": (rules.BuildState.DONE if done else rules.BuildState.BUILDING).value,
        "parts": part + 1,
        "records": int(build.get("records") or 0) + kept,
        "step": page.step,
        "steps": page.steps,
        "cursor": page.next_cursor,
        "finishedAt": now if done else None,
        "expiresAt": expires if done else None,
    }
    batch = _db().batch()
    store.set(
        part_ref(request_id, part),
        {"uid": req["uid"], "part": part, "count": kept, "records": blob, "expireAt": expires},
        tx=batch,
        by=by,
    )
    update: dict[str, Any] = {"build": build}
    if done:
        update |= {"state": rules.RequestState.DONE.value, "completedAt": now, "handledBy": by}
    store.update(request_ref(request_id), update, tx=batch, by=by)
    batch.commit()
    return build


def read_part(req: dict[str, Any], part: int) -> tuple[list[Record], int]:
    """A built part's records and the number of parts; NotFound when it is not there (not
    built, or its download time is over)."""
    build = req.get("build") or {}
    expires = build.get("expiresAt")
    if build.get("state") != rules.BuildState.DONE.value or not 0 <= part < int(
        build.get("parts") or 0
    ):
        raise NotFound("This part of the export is not built.", code="export_part_missing")
    if expires is not None and expires <= clock.now():
        raise NotFound("This export's download time is over: ask again.", code="export_expired")
    snap = part_ref(req["id"], part).get()
    if not snap.exists:
        raise NotFound("This export's download time is over: ask again.", code="export_expired")
    return decode_part((snap.to_dict() or {})["records"]), int(build["parts"])

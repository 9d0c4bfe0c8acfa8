"""Erasure: an account asks to be closed; after the cooling-off period the scheduled run
(`POST /privacy/erasure/run`) erases it, following `rules.HOLDINGS`.

What goes: the Firebase Auth account, the sessions (ended, then deleted), device tokens,
preferences, the directory listing, the provider's setup (availability, clinic), the payout
address, suppressions of its addresses, the event log's entries of it, replayable answers
(idempotency); notices are cancelled and stripped of their addresses and contents; the profile
is anonymized (uid, role and dates only, never approved: no one can book it) and the access
record becomes a tombstone, so every
token and cookie of the account is refused on its next request.

What stays, as the law and the books require, is recorded in `legalHolds/{uid}`: which
collections hold the account's records and until when (retention periods are settings); the
hold sweep (shared.privacy.holds) erases them when that time comes. Those
records are pseudonymous from then on: they name the account by its uid alone, which nothing
links to a person any more. The audit log is append-only and kept whole.

A provider with visits still to come or money still owed or in transit cannot be erased until
those are settled: the request is refused (409 `erasure_blocked`), and a run that finds one
blocked leaves it waiting and says why.

Races, closed by construction on the account's access record (`access/{uid}`, which every path
merges into, so nothing else overwrites these fields):
- `erasureRequest` names the account's open erasure request. A request is made in one batch
  with its notice and this field, written only if the record is unchanged since it was read:
  of requests racing, one commits; the others read again and are answered with it.
- `closing`: the run has begun on the account (the fence). The booking paths read it inside
  their transactions (shared.appointments.service, shared.bookings.service) and refuse the
  account; the run writes it in the commit that starts the request, and only then judges the
  blockers. A booking that committed before the fence is found (the request is `blocked`),
  one after it was refused: none lands with an account being erased. A blocked request keeps
  the fence (the account takes no new visits while it waits); a cancelled one lifts it.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from shared.identity import access, sessions
from shared.platform import clients, clock, logs, outbox, settings, store
from shared.platform.context import Principal, Role
from shared.platform.errors import Conflict, NotFound, Unauthenticated
from shared.privacy import rules, service

HOLDS = "legalHolds"
MAX_DOCUMENTS_PER_RUN = 2000

log = logs.get("alodoktor.privacy")


def _db() -> Any:
    return clients.db()


def _any(
    collection: str,
    field: str,
    value: str,
    statuses: frozenset[str],
    *,
    not_begun: str | None = None,
) -> bool:
    """Whether `collection` has a document with `field` = `value` in one of `statuses`; with
    `not_begun` (the field of its start), only one that has not begun yet."""
    from google.cloud.firestore import FieldFilter

    query = (
        _db()
        .collection(collection)
        .where(filter=FieldFilter(field, "==", value))
        .where(filter=FieldFilter("status", "in", sorted(statuses)))
        .limit(1 if not_begun is None else 100)
    )
    if not_begun is None:
        return any(True for _ in query.stream())
    now = clock.now()
    return any(
        isinstance(when := (s.to_dict() or {}).get(not_begun), datetime) and when > now
        for s in query.stream()
    )


def blockers(uid: str, role: str) -> list[str]:
    """Why this account cannot be erased yet (empty: it can)."""
    if role == Role.PATIENT.value:
        # A visit to come holds a provider's time and, paid, the patient's money: cancelled
        # first (refunded as the policy says), never left booked for an account that is gone.
        # One that has begun is the provider's to record; it does not hold up the erasure.
        if _any(
            "appointments", "patientUid", uid, rules.OPEN_APPOINTMENTS, not_begun="start"
        ) or _any("bookings", "patientUid", uid, rules.OPEN_BOOKINGS, not_begun="windowStart"):
            return ["visits_to_come"]
        return []
    if role not in (Role.DOCTOR.value, Role.CLINIC.value, Role.PHARMACY.value):
        return []
    from shared.payments import ledger_store

    found = []
    if role == Role.DOCTOR.value and _any(
        "appointments", "doctorUid", uid, rules.OPEN_APPOINTMENTS
    ):
        found.append("open_appointments")
    if role == Role.CLINIC.value and _any("bookings", "clinicUid", uid, rules.OPEN_BOOKINGS):
        found.append("open_bookings")
    if _any("payouts", "providerUid", uid, rules.OPEN_PAYOUTS):
        found.append("payouts_in_transit")
    if role in (Role.DOCTOR.value, Role.CLINIC.value):
        account = f"earnings:{role}:{uid}"
        if any(v != 0 for v in ledger_store.balances(account).values()):
            found.append("money_owed")
    return found


def _blocked(reasons: list[str]) -> Conflict:
    return Conflict(
        "Settle these first: " + ", ".join(reasons) + ".",
        code="erasure_blocked",
        reasons=reasons,
    )


_OPEN = frozenset(
    {rules.RequestState.WAITING, rules.RequestState.BLOCKED, rules.RequestState.RUNNING}
)
# Not yet started: the account may still cancel, and its blockers are judged before it starts.
_NOT_STARTED = frozenset({rules.RequestState.WAITING, rules.RequestState.BLOCKED})


# On the account's access record (see the module's docstring); booking paths read the fence
# with access.closing.
OPEN_REQUEST = "erasureRequest"
CLOSING = access.CLOSING


def _open_request(uid: str) -> dict[str, Any] | None:
    """An open erasure request made before the access record named it (a legacy one)."""
    from google.cloud.firestore import FieldFilter

    query = _db().collection(service.REQUESTS).where(filter=FieldFilter("uid", "==", uid))
    for snap in query.limit(50).stream():
        d = snap.to_dict() or {}
        if d.get("kind") == "erasure" and d.get("state") in _OPEN:
            return {**d, "id": snap.id}
    return None


def _recently_signed_in(principal: Principal) -> None:
    """Closing an account is asked of the person, not of whoever holds their session: the
    sign-in behind the request must be recent (a cookie session keeps its sign-in's time)."""
    window = settings.get().recent_sign_in_seconds
    # auth_time is the Auth service's clock, which never moves: compared with the real one.
    if clock.real_timestamp() - principal.auth_time > window:
        raise Unauthenticated(
            "Sign in again to close your account: it needs a sign-in from the last "
            f"{window // 60 or 1} minutes.",
            code=REAUTHENTICATE,
            maxAgeSeconds=window,
        )


REAUTHENTICATE = "reauthenticate"
NOTICE = "erasure_requested"


def _cancel_url(request_id: str) -> str | None:
    # The front end's own convention for links back into it (as PayPal's return link).
    base = settings.get().frontend_url
    return f"{base}/?erasure=cancel&request={request_id}" if base else None


def request(principal: Principal) -> tuple[dict[str, Any], bool]:
    """Ask for the account's erasure; (the request, whether it is new). The owner is told at
    once, with the date it takes effect and how to cancel. One open request per account, by
    construction: the request, its notice and the access record naming it are one commit,
    conditional on that record being unchanged since it was read."""
    _recently_signed_in(principal)
    uid = principal.uid
    account = access.ref(uid)
    judged: list[str] | None = None

    def attempt(batch: Any) -> tuple[dict[str, Any], bool]:
        nonlocal judged
        snap = account.get()
        if not snap.exists:  # a record is made on an account's first request: not yet here
            access.load(uid)
            raise store.ReadAgain()
        named = (snap.to_dict() or {}).get(OPEN_REQUEST)
        existing = service.get_request(named) if isinstance(named, str) and named else None
        if existing is None or existing.get("state") not in _OPEN:
            existing = _open_request(uid)  # made before the record named it
        if existing is not None:
            if named != existing["id"]:
                store.update(
                    account,
                    {OPEN_REQUEST: existing["id"]},
                    tx=batch,
                    by=uid,
                    unchanged_since=snap.update_time,
                )
            return existing, False
        if judged is None:
            judged = blockers(uid, principal.role.value)
        if judged:
            raise _blocked(judged)
        now = clock.now()
        after = rules.erasure_due(now, settings.get().erasure_cooling_off_days)
        ref = _db().collection(service.REQUESTS).document()
        made = service.new_request(
            principal,
            rules.RequestKind.ERASURE,
            rules.RequestState.WAITING,
            tx=batch,
            ref=ref,
            eraseAfter=after,
        )
        data: dict[str, Any] = {"requestId": ref.id, "eraseAfter": after.isoformat()}
        if url := _cancel_url(ref.id):
            data["cancelUrl"] = url
        # In the request's commit (the outbox): no request without its notice, nor the reverse.
        outbox.queue(batch, uid, "", NOTICE, data, uid)
        store.update(
            account,
            {OPEN_REQUEST: ref.id, CLOSING: False},
            tx=batch,
            by=uid,
            unchanged_since=snap.update_time,
        )
        return made, True

    result: tuple[dict[str, Any], bool] = store.run_optimistic(attempt, attempts=10)
    return result


def cancel(principal: Principal, request: dict[str, Any]) -> dict[str, Any]:
    """Take the request back while it has not started; the fence of a blocked one is lifted.
    Conditional on the request being unchanged since read: a run that started it meanwhile
    wins, and the cancellation is refused (409 `erasure_started`)."""
    if request.get("kind") != "erasure":
        raise NotFound()
    ref = service.request_ref(request["id"])
    account = access.ref(request["uid"])

    def attempt(batch: Any) -> dict[str, Any]:
        snap = ref.get()
        current = {**(snap.to_dict() or {}), "id": snap.id}
        if current.get("state") not in _NOT_STARTED:
            raise Conflict("This request can no longer be cancelled.", code="erasure_started")
        update = {
            "state": rules.RequestState.CANCELLED.value,
            "eraseAfter": None,
            "completedAt": clock.now(),
            "handledBy": principal.uid,
        }
        store.update(ref, update, tx=batch, by=principal.uid, unchanged_since=snap.update_time)
        held = account.get()
        if held.exists and (held.to_dict() or {}).get(OPEN_REQUEST) in (request["id"], None):
            store.update(
                account,
                {OPEN_REQUEST: None, CLOSING: False},
                tx=batch,
                by=principal.uid,
                unchanged_since=held.update_time,
            )
        return {**current, **update}

    result: dict[str, Any] = store.run_optimistic(attempt, attempts=10)
    return result


# -- the scheduled run ----------------------------------------------------------------------


def due(limit: int) -> list[dict[str, Any]]:
    """The requests due, oldest first; each with `_read`, the update time it was read at."""
    from google.cloud.firestore import FieldFilter

    query = (
        _db()
        .collection(service.REQUESTS)
        .where(filter=FieldFilter("eraseAfter", "<=", clock.now()))
        .order_by("eraseAfter")
        .limit(limit)
    )
    return [{**(s.to_dict() or {}), "id": s.id, READ: s.update_time} for s in query.stream()]


READ = "_read"


# A blocked request is looked at again this much later (by the next daily run): meanwhile it
# leaves the front of `due`, so blocked requests never take every place of a run.
RECHECK_BLOCKED = timedelta(hours=12)


def current_role(uid: str, asked_as: str) -> str:
    """The account's role now (it may have changed since it asked): its access record's, or
    its profile's, or else the one it asked as."""
    state = access.get(uid)
    if state is not None and state.role is not None:
        return state.role.value
    snap = _db().collection("users").document(uid).get()
    role = (snap.to_dict() or {}).get("role") if snap.exists else None
    return role if isinstance(role, str) and role else asked_as


def _still_blocked(req: dict[str, Any]) -> tuple[str, list[str]]:
    """The account's current role, and what stops its erasure under that role or the one it
    asked as (money owed as a doctor stays owed after a change of role)."""
    asked_as = str(req.get("role"))
    role = current_role(req["uid"], asked_as)
    reasons: list[str] = []
    for r in dict.fromkeys((role, asked_as)):
        reasons += [x for x in blockers(req["uid"], r) if x not in reasons]
    return role, reasons


def run(limit: int, actor: str) -> dict[str, Any]:
    erased: list[str] = []
    blocked: list[str] = []
    going_on: list[str] = []
    for req in due(limit):
        role = str(req.get("role"))
        # Not started, or fenced by a run that stopped before it judged the blockers.
        if req.get("state") in _NOT_STARTED or not req.get("startedAt"):
            if not _fence(req, actor):
                continue  # cancelled (or changed) since it was read: not this run's
            # Judged now, after the fence, not when asked: a patient who became a doctor
            # since, with visits to come or money owed, is not erased; a booking made before
            # the fence is found here, and none is made after it.
            role, reasons = _still_blocked(req)
            if reasons:
                _block(req, role, reasons, actor)
                blocked.append(req["id"])
                continue
        finished = erase(req["uid"], role, req["id"], actor)
        (erased if finished else going_on).append(req["id"])
    return {"erased": erased, "blocked": blocked, "continuing": going_on}


def _fence(req: dict[str, Any], actor: str) -> bool:
    """Start the request and close the account to bookings, in one commit, only if the
    request is as `due` read it (a cancellation since wins); False when it was not."""
    from google.api_core.exceptions import FailedPrecondition
    from google.api_core.exceptions import NotFound as Gone

    batch = _db().batch()
    store.update(
        service.request_ref(req["id"]),
        {"state": rules.RequestState.RUNNING.value, "closingAt": clock.now()},
        tx=batch,
        by=actor,
        unchanged_since=req.get(READ),
    )
    _close(batch, req["uid"], req["id"], actor)
    try:
        batch.commit()
    except (FailedPrecondition, Gone):
        log.info("erasure %s changed since read: left to the next run", req["id"])
        return False
    return True


def _close(batch: Any, uid: str, request_id: str, actor: str) -> None:
    """The fence: from this commit on, the booking paths refuse the account."""
    store.set(
        access.ref(uid),
        {CLOSING: True, OPEN_REQUEST: request_id},
        merge=True,
        tx=batch,
        by=actor,
    )


def _block(req: dict[str, Any], role: str, reasons: list[str], actor: str) -> None:
    now = clock.now()
    update = {
        "state": rules.RequestState.BLOCKED.value,
        "blockedBy": reasons,
        "blockedAt": now,
        "role": role,
        "eraseAfter": now + RECHECK_BLOCKED,
    }
    store.update(service.request_ref(req["id"]), update, by=actor)
    log.info("erasure %s of %s blocked: %s", req["id"], req["uid"], ", ".join(reasons))


def _delete_auth(uid: str) -> None:
    from firebase_admin import auth

    with contextlib.suppress(auth.UserNotFoundError):
        auth.delete_user(uid, app=clients.firebase_app())


def _docs(holding: rules.Holding, uid: str, limit: int) -> list[Any]:
    from google.cloud.firestore import FieldFilter

    collection = _db().collection(holding.collection)
    found: dict[str, Any] = {}
    if holding.by_id:
        snap = collection.document(uid).get()
        if snap.exists:
            found[snap.reference.path] = snap
    for field in holding.fields:
        for snap in collection.where(filter=FieldFilter(field, "==", uid)).limit(limit).stream():
            found[snap.reference.path] = snap
    return list(found.values())


def _held(holding: rules.Holding, uid: str) -> int:
    """How many of a held collection's records name `uid` (by count aggregations)."""
    from google.cloud.firestore import FieldFilter

    collection = _db().collection(holding.collection)
    found = 1 if holding.by_id and collection.document(uid).get().exists else 0
    for field in holding.fields:
        found += store.count(collection.where(filter=FieldFilter(field, "==", uid)))
    return found


def erase(uid: str, role: str, request_id: str, actor: str) -> bool:
    """Erase what `rules.HOLDINGS` says; True when done (else the next run goes on)."""
    ref = service.request_ref(request_id)
    started = ref.get().to_dict() or {}
    began = started.get("startedAt") or clock.now()
    batch = _db().batch()
    store.update(
        ref,
        {
            "state": rules.RequestState.RUNNING.value,
            "role": role,
            "blockedBy": None,
            "startedAt": began,
        },
        tx=batch,
        by=actor,
    )
    _close(batch, uid, request_id, actor)  # fenced already when `run` called (here for others)
    batch.commit()
    profile_snap = _db().collection("users").document(uid).get()
    profile = (profile_snap.to_dict() or {}) if profile_snap.exists else {}
    _delete_auth(uid)
    access.write(access.deleted(uid), by=actor)
    sessions.revoke_all(uid)
    # Before the profile is anonymized (a later run of a long erasure finds no address left).
    _suppressions(profile)
    held: dict[str, int] = {}
    # Where each scrubbed collection's walk got to: a scrubbed record keeps the uid, so without
    # it every run would read the same first ones again and a long erasure would never end.
    marks: dict[str, str] = dict(started.get(SCRUB_MARKS) or {})
    budget = MAX_DOCUMENTS_PER_RUN
    for holding in rules.HOLDINGS:
        if holding.collection in ("access", "privacyRequests", "consents", "legalHolds"):
            continue
        if holding.treatment == "hold":
            # Held records stay as they are: counted, never read, so however many a provider
            # has they take nothing from the run's budget (or every run would stop on them).
            if n := _held(holding, uid):
                held[holding.collection] = n
            continue
        if holding.treatment == "scrub":
            budget = _scrub(holding, uid, budget, marks, actor)
            if budget > 0:
                budget = _scrub(holding, uid, budget, marks, actor, since=began - LATE_MARGIN)
            if budget <= 0:
                return _paused(ref, started, marks, actor)
            continue
        snaps = _docs(holding, uid, budget)
        budget -= len(snaps)
        for snap in snaps:
            _treat(holding, snap, uid, actor)
        if budget <= 0:
            return _paused(ref, started, marks, actor)
    # The account's built exports are copies of what was just erased.
    budget = _export_parts(uid, budget, actor)
    if budget <= 0:
        return _paused(ref, started, marks, actor)
    _hold(uid, held, actor)
    store.update(
        ref,
        {
            "state": rules.RequestState.DONE.value,
            "eraseAfter": None,
            "completedAt": clock.now(),
            "handledBy": actor,
        },
        by=actor,
    )
    log.info("account %s erased", uid)
    return True


def _paused(ref: Any, started: dict[str, Any], marks: dict[str, str], actor: str) -> bool:
    """End this run with more to do: where the scrubbing walks got to is kept (whichever
    holding ran out of budget), so the next run does not read the same records again."""
    if marks != (started.get(SCRUB_MARKS) or {}):
        store.update(ref, {SCRUB_MARKS: marks}, by=actor)
    return False


def _export_parts(uid: str, budget: int, actor: str) -> int:
    """Delete the parts of the account's built exports, as many as `budget` allows; the
    budget left."""
    from google.cloud.firestore import FieldFilter

    query = _db().collection(service.REQUESTS).where(filter=FieldFilter("uid", "==", uid))
    for snap in query.stream():
        if budget <= 0:
            break
        if (snap.to_dict() or {}).get("kind") != rules.RequestKind.EXPORT.value:
            continue
        parts = list(snap.reference.collection(service.PARTS).limit(budget).stream())
        for part in parts:
            store.delete(part.reference, by=actor)
        budget -= len(parts)
    return budget


SCRUB_MARKS = "scrubbedUpTo"  # on the request: {"<collection>.<field>": last document id}


# A record is stamped when its writer starts, and committed a moment later: one stamped just
# before the erasure began may land after the walk went past its id.
LATE_MARGIN = timedelta(minutes=1)


def _scrub(
    holding: rules.Holding,
    uid: str,
    budget: int,
    marks: dict[str, str],
    actor: str,
    *,
    since: datetime | None = None,
) -> int:
    """Scrub the next records of `holding` naming `uid`, from where `marks` says the last run
    stopped, as many as `budget` allows; the budget left (0: more may remain, the next run
    goes on). In document order; with `since`, only those made since then, in the order they
    were made: a notice queued while the erasure runs (a refund's, say) may have a random id
    that sorts before where the first walk had got to."""
    from google.cloud.firestore import FieldFilter

    collection = _db().collection(holding.collection)
    for field in holding.fields:
        if budget <= 0:
            break
        query = collection.where(filter=FieldFilter(field, "==", uid))
        if since is None:
            key = f"{holding.collection}.{field}"
            query = query.order_by("__name__")
            if after := marks.get(key):
                query = query.start_after({"__name__": after})
        else:
            key = f"{holding.collection}.{field}.late"
            query = query.where(filter=FieldFilter("createdAt", ">=", since)).order_by("createdAt")
            if (after := marks.get(key)) and (last := collection.document(after).get()).exists:
                query = query.start_after(last)
        snaps = list(query.limit(budget).stream())
        for snap in snaps:
            _treat(holding, snap, uid, actor)
        if snaps:
            marks[key] = snaps[-1].id
        budget -= len(snaps)
    return budget


def _treat(holding: rules.Holding, snap: Any, uid: str, actor: str) -> None:
    data = snap.to_dict() or {}
    if holding.treatment == "delete":
        store.delete(snap.reference, by=actor)
    elif holding.treatment == "anonymize":  # the profile
        kept = {k: v for k, v in data.items() if k in rules.KEPT_PROFILE_FIELDS}
        store.set(
            snap.reference, {**kept, **rules.anonymized(uid), "erasedAt": clock.now()}, by=actor
        )
    elif holding.treatment == "scrub":
        # A notice: stopped (shared.platform.outbox's cancellation), its address and content gone.
        update: dict[str, Any] = {f: None for f in holding.scrubbed if f in data}
        if not data.get("cancelled"):
            update |= {"cancelled": True, "cancelledAt": clock.now()}
        if update:
            store.update(snap.reference, update, by=actor)


def _suppressions(profile: dict[str, Any]) -> None:
    from shared.notify import rules as notify_rules

    for channel, address in (
        (notify_rules.Channel.EMAIL, profile.get("email")),
        (notify_rules.Channel.SMS, profile.get("phone")),
    ):
        if isinstance(address, str) and address:
            ref = (
                _db().collection("suppressions").document(notify_rules.address_id(channel, address))
            )
            store.delete(ref, by="system")


def _hold(uid: str, held: dict[str, int], actor: str) -> None:
    s = settings.get()
    now = clock.now()
    days: dict[rules.Retention, int] = {
        "medical": s.medical_retention_days,
        "financial": s.financial_retention_days,
        "audit": s.audit_retention_days,
    }
    kinds = {h.collection: h.retention for h in rules.HOLDINGS if h.retention}
    hold: dict[str, Any] = {
        "uid": uid,
        "createdAt": now,
        "collections": {
            c: {
                "count": n,
                "retention": kinds[c],
                "until": rules.retention_end(now, kinds[c], days),
            }
            for c, n in held.items()
        },
        # Always kept: the books by account name and the audit log.
        "books": {
            "retention": "financial",
            "until": rules.retention_end(now, "financial", days),
            "accounts": list(rules.ledger_accounts(uid)),
        },
        "auditLog": {"retention": "audit", "until": rules.retention_end(now, "audit", days)},
    }
    # When the hold sweep (shared.privacy.holds) next has something to erase.
    hold |= {"nextEnd": rules.next_end(hold), "closedAt": None}
    store.set(_db().collection(HOLDS).document(uid), hold, merge=True, by=actor)

"""Reconciliation of Firebase Auth with the access records: drift found and repaired.

The backend writes an access record whenever it changes an account, but an account can also
be changed where the backend does not see it: disabled, deleted or given other claims in the
Firebase console, or its tokens revoked by another Admin SDK. Each run checks one bounded page
of Auth's accounts against their records and one page of records against Auth (a record whose
account is gone), and continues where the last run stopped, so every account is checked once
per full cycle whatever the number of accounts. A repaired record that takes access away ends
the account's sessions at once.

Auth is the source of truth here, as it is for sign-in: the record is made to say what Auth
says, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.identity import access, sessions
from shared.platform import clients, clock, logs, store

STATE_COLLECTION = "reconciliation"
STATE_DOC = "auth"
GET_USERS_LIMIT = 100  # Auth's batch lookup takes at most 100 identifiers

log = logs.get("alodoktor.reconciliation")


@dataclass
class Report:
    checked: int = 0
    repaired: list[str] = field(default_factory=list)
    sessions_ended: int = 0
    cycle_complete: bool = False


def _auth() -> Any:
    from firebase_admin import auth

    return auth


def _state_ref() -> Any:
    return clients.db().collection(STATE_COLLECTION).document(STATE_DOC)


def _repair(held: access.AccessState | None, truth: access.AccessState, report: Report) -> None:
    if held == truth:
        return
    access.write(truth, by="system:reconciliation")
    report.repaired.append(truth.uid)
    if held is not None and held.narrows(truth):
        report.sessions_ended += sessions.revoke_all(truth.uid)
    log.warning(
        "auth drift repaired for %s: record %s, Auth %s",
        truth.uid,
        access.to_document(held) if held else None,
        access.to_document(truth),
    )


def _held(uids: list[str]) -> dict[str, access.AccessState]:
    refs = [access.ref(uid) for uid in uids]
    found: dict[str, access.AccessState] = {}
    for snap in clients.db().get_all(refs):
        if snap.exists:
            found[snap.id] = access.from_document(snap.id, snap.to_dict() or {})
    return found


def _auth_page(token: str | None, limit: int, report: Report) -> str | None:
    """Auth's accounts against their records; the next page token (None: all seen)."""
    page = _auth().list_users(page_token=token, max_results=limit, app=clients.firebase_app())
    truths = [access.from_user_record(user) for user in page.users]
    held = _held([t.uid for t in truths])
    for truth in truths:
        report.checked += 1
        current = held.get(truth.uid)
        if current is None:
            # Not signed in since records began: made on its first request, nothing to repair.
            continue
        _repair(current, truth, report)
    next_token: str | None = page.next_page_token or None
    return next_token


def _record_page(after: str | None, limit: int, report: Report) -> str | None:
    """Records against Auth: an account deleted outside the backend leaves a live record."""
    from google.cloud.firestore import FieldFilter

    collection = clients.db().collection(access.COLLECTION)
    query = collection.where(filter=FieldFilter("deleted", "==", False)).order_by("__name__")
    if after:
        query = query.start_after({"__name__": collection.document(after)})
    snaps = list(query.limit(limit).stream())
    auth = _auth()
    for start in range(0, len(snaps), GET_USERS_LIMIT):
        chunk = snaps[start : start + GET_USERS_LIMIT]
        result = auth.get_users(
            [auth.UidIdentifier(s.id) for s in chunk], app=clients.firebase_app()
        )
        missing = {identifier.uid for identifier in result.not_found}
        for snap in chunk:
            if snap.id in missing:
                held = access.from_document(snap.id, snap.to_dict() or {})
                _repair(held, access.deleted(snap.id), report)
    return snaps[-1].id if len(snaps) == limit else None


def run(*, limit: int) -> Report:
    """One bounded step of the cycle: at most `limit` accounts and `limit` records."""
    report = Report()
    snap = _state_ref().get()
    state: dict[str, Any] = (snap.to_dict() if snap.exists else None) or {}
    auth_token = _auth_page(state.get("authPageToken"), limit, report)
    record_after = _record_page(state.get("recordAfter"), limit, report)
    report.cycle_complete = auth_token is None and record_after is None
    store.set(
        _state_ref(),
        {
            "authPageToken": auth_token,
            "recordAfter": record_after,
            "lastRunAt": clock.now(),
            "lastRepaired": len(report.repaired),
        },
        by="system:reconciliation",
    )
    log.info(
        "auth reconciliation checked %d accounts, repaired %d, ended %d sessions%s",
        report.checked,
        len(report.repaired),
        report.sessions_ended,
        " (cycle complete)" if report.cycle_complete else "",
    )
    return report

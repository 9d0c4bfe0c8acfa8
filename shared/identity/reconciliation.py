"""Reconciliation of Firebase Auth with the access records: drift found and repaired.

The backend writes an access record whenever it changes an account, but an account can also
be changed where the backend does not see it: disabled, deleted or given other claims in the
Firebase console, or its tokens revoked by another Admin SDK. Each run checks one bounded page
of Auth's accounts against their records and one page of records against Auth (a record whose
account is gone), and continues where the last run stopped, so every account is checked once
per full cycle whatever the number of accounts. A repaired record that takes access away ends
the account's sessions at once.

What is true depends on who may change it:

- Role and approval are decided by the backend alone (an admin's decision, a sign-up), and
  committed in the profile and the access record together before Auth's claims are set from
  them (shared.identity.accounts). The record is their truth: claims that differ from it are
  a decision whose request failed or died after its commit, or claims given in the console,
  and are set back to the committed decision (`accounts.settle_claims`, which reads the
  profile and goes round while it changes), never the record to the claims: that would undo
  the decision (an approved doctor locked out, a rejected one let back in). Claims narrower
  than Auth held end the account's sessions, as its own request would have. A record with no
  role yet (made from Auth before the account's first sign-in), or of an account with no
  profile (no decision of the backend's: its role is the claims an admin set in the console),
  takes Auth's claims.
- Disabled, the revocation instant and the e-mail can change in Auth alone (the console,
  another Admin SDK), and the backend asks Auth for them first: the record is made to say
  what Auth says. An account gone from Auth gets a tombstone.
- A tombstone is the backend's decision too (a deletion writes it before Auth is asked): one
  found with its Auth user still there is a deletion Auth failed to finish, kept (and logged)
  until a repeat of the deletion finishes it. Only an Auth user made after the tombstone (the
  id used again, by hand) lifts it.

A record repair is written only if the record is still the version read, so a decision
committed meanwhile is never overwritten; the next run looks again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.identity import access, accounts, profiles, sessions
from shared.platform import clients, clock, logs, store
from shared.platform.context import Role
from shared.platform.errors import NotFound

STATE_COLLECTION = "reconciliation"
STATE_DOC = "auth"
GET_USERS_LIMIT = 100  # Auth's batch lookup takes at most 100 identifiers
ACTOR = "system:reconciliation"

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


def _repair(
    held: access.AccessState | None,
    truth: access.AccessState,
    report: Report,
    *,
    read_at: Any = None,
) -> None:
    """Write `truth` over the record `held`; with `read_at` (its update time), only if it was
    not written since (a decision committed meanwhile is left for the next run to judge)."""
    from google.api_core.exceptions import FailedPrecondition

    if held == truth:
        return
    if read_at is None:
        access.write(truth, by=ACTOR)
    else:
        try:
            store.update(
                access.ref(truth.uid), access.to_document(truth), by=ACTOR, unchanged_since=read_at
            )
        except FailedPrecondition:
            log.info(
                "access record of %s changed while it was checked: left for the next run", truth.uid
            )
            return
    report.repaired.append(truth.uid)
    if held is not None and held.narrows(truth):
        report.sessions_ended += sessions.revoke_all(truth.uid)
    log.warning(
        "auth drift repaired for %s: record %s, Auth %s",
        truth.uid,
        access.to_document(held) if held else None,
        access.to_document(truth),
    )


def _claims_of(state: access.AccessState) -> tuple[Role | None, bool]:
    return state.role, state.approved


def _settle_claims(held: access.AccessState, auth_says: access.AccessState, report: Report) -> None:
    """Auth's claims differ from the decision the record holds: set them from it."""
    try:
        profile = accounts.settle_claims(held.uid, actor=ACTOR)
    except NotFound:
        # No profile (or no Auth user any more): nothing decided to push; the record page, or
        # the account's first sign-in, deals with it.
        log.warning("claims of %s differ from its access record, and it has no profile", held.uid)
        return
    except (KeyError, ValueError):
        # A profile without a role one can read: one account's record must not stop the run.
        log.exception(
            "claims of %s differ from its access record; its profile is unreadable", held.uid
        )
        return
    decided = access.with_claims(auth_says, Role(profile["role"]), bool(profile.get("approved")))
    if held.uid not in report.repaired:
        report.repaired.append(held.uid)
    if auth_says.narrows(decided):
        # What Auth held gave more than the decision: its request may have died before ending
        # the sessions that still hold it.
        report.sessions_ended += sessions.revoke_all(held.uid)
    log.warning(
        "auth drift repaired for %s: claims %s set to the decision %s",
        held.uid,
        {"role": auth_says.role.value if auth_says.role else None, "approved": auth_says.approved},
        {"role": profile["role"], "approved": bool(profile.get("approved"))},
    )


def _held(uids: list[str]) -> dict[str, tuple[access.AccessState, Any]]:
    """The records of these accounts that have one, each with its update time."""
    refs = [access.ref(uid) for uid in uids]
    found: dict[str, tuple[access.AccessState, Any]] = {}
    for snap in clients.db().get_all(refs):
        if snap.exists:
            found[snap.id] = (access.from_document(snap.id, snap.to_dict() or {}), snap.update_time)
    return found


def _created_after(user: Any, written: Any) -> bool:
    """Whether the Auth user was made after the record was written (an id used again)."""
    created_ms = int(getattr(user.user_metadata, "creation_timestamp", 0) or 0)
    return written is not None and created_ms > written.timestamp() * 1000


def _undecided(uid: str) -> bool:
    """Whether the backend has made no decision of this account's role and approval: it has
    no profile (or only what an erasure leaves), so the claims in Auth are the only one."""
    profile = profiles.get(uid)
    return profile is None or bool(profile.get("erased"))


def _check(user: Any, held: access.AccessState, read_at: Any, report: Report) -> None:
    auth_says = access.from_user_record(user)
    if held.deleted:
        if _created_after(user, read_at):
            _repair(held, auth_says, report, read_at=read_at)
        else:
            log.warning(
                "deletion of %s unfinished: its Auth user is still there; the record stays a"
                " tombstone until the deletion is asked again",
                held.uid,
            )
        return
    if held.role is None:
        # Nothing decided by the backend yet: Auth's claims are all there is.
        _repair(held, auth_says, report, read_at=read_at)
        return
    if _claims_of(auth_says) != _claims_of(held) and _undecided(held.uid):
        # No profile: the role came from claims an admin set in the console (the account
        # adopted on its first bearer request), and a change there is theirs to make. Read only
        # on drift, so the run costs no profile read per account.
        _repair(held, auth_says, report, read_at=read_at)
        return
    # Auth's own fields from Auth; the decided ones stay the record's.
    _repair(held, access.with_claims(auth_says, held.role, held.approved), report, read_at=read_at)
    if _claims_of(auth_says) != _claims_of(held):
        _settle_claims(held, auth_says, report)


def _auth_page(token: str | None, limit: int, report: Report) -> str | None:
    """Auth's accounts against their records; the next page token (None: all seen)."""
    page = _auth().list_users(page_token=token, max_results=limit, app=clients.firebase_app())
    held = _held([user.uid for user in page.users])
    for user in page.users:
        report.checked += 1
        found = held.get(user.uid)
        if found is None:
            # Not signed in since records began: made on its first request, nothing to repair.
            continue
        _check(user, found[0], found[1], report)
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
                _repair(held, access.deleted(snap.id), report)  # gone from Auth: Auth's truth
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
        by=ACTOR,
    )
    log.info(
        "auth reconciliation checked %d accounts, repaired %d, ended %d sessions%s",
        report.checked,
        len(report.repaired),
        report.sessions_ended,
        " (cycle complete)" if report.cycle_complete else "",
    )
    return report

"""Access records (`access/{uid}`): what authentication needs to know of an account, in one
small document, so that no request has to ask the Firebase Auth API.

The record holds what decides access: the role and approval, whether the account is disabled
or deleted, and the instant before which its sign-ins were revoked. Each has one source of
truth, by who may change it:

- role and approval are the backend's decisions: written here in the commit that decides them,
  beside the profile (`mirror`), and copied to Auth's custom claims after it. Claims that
  differ are a copy that failed (or was changed in the console) and are set back.
- disabled, the revocation instant and the e-mail can change in Firebase Auth alone (the
  console, another Admin SDK); the backend changes them in Auth first and writes them here
  after (`record_revocation`, `refresh`), and this record follows Auth.
- a tombstone (`deleted`) follows Auth when the account is gone from it; one the backend wrote
  before asking Auth to delete the account stays until that deletion is finished.

Every path that changes one of these writes the record before it ends the account's sessions,
so the change bites on the very next request at every instance. What differs from Auth is
found and repaired on Cloud Scheduler's schedule by shared.identity.reconciliation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any

from shared.identity import consent
from shared.platform import clients, store
from shared.platform.context import Role
from shared.platform.errors import Unauthenticated

COLLECTION = "access"


@dataclass(frozen=True)
class AccessState:
    uid: str
    email: str | None
    role: Role | None  # None: signed up, but no profile yet
    approved: bool
    disabled: bool
    # Sign-ins (ID tokens, refresh tokens, session cookies) from before this are revoked.
    valid_after_ms: int
    deleted: bool = False
    # The consents accepted ({document: version}, shared.identity.consent): written by the
    # privacy room alone, never by Auth's paths, so neither a drift check nor a refresh sees it.
    consents: dict[str, int] = field(default_factory=dict, compare=False)

    def refusal(self, auth_time: int) -> Unauthenticated | None:
        """Why a sign-in made at `auth_time` (seconds) may not act now, or None."""
        if self.deleted:
            return Unauthenticated("This account no longer exists.", code="user_not_found")
        if self.disabled:
            return Unauthenticated("This account is disabled.", code="user_disabled")
        # Auth's revocation has second precision: a token from that same second stays valid.
        if auth_time * 1000 < self.valid_after_ms:
            return Unauthenticated("This sign-in was revoked; sign in again.", code="token_revoked")
        return None

    def check(self, auth_time: int) -> None:
        refused = self.refusal(auth_time)
        if refused is not None:
            raise refused

    def narrows(self, newer: AccessState) -> bool:
        """Whether `newer` takes away access this state gave (so sessions must end)."""
        return (
            (newer.deleted and not self.deleted)
            or (newer.disabled and not self.disabled)
            or newer.valid_after_ms > self.valid_after_ms
            or newer.role != self.role
            or (self.approved and not newer.approved)
        )


def role_of(raw: Any) -> Role | None:
    return Role(raw) if isinstance(raw, str) and raw in set(Role) else None


def from_user_record(user: Any) -> AccessState:
    """The state Firebase Auth holds for a `firebase_admin.auth.UserRecord`."""
    claims: dict[str, Any] = user.custom_claims or {}
    return AccessState(
        uid=user.uid,
        email=user.email,
        role=role_of(claims.get("role")),
        approved=claims.get("approved") is True,
        disabled=bool(user.disabled),
        valid_after_ms=int(user.tokens_valid_after_timestamp or 0),
    )


def deleted(uid: str) -> AccessState:
    """A tombstone: the account is gone, and its unexpired tokens find that out in one read."""
    return AccessState(uid, None, None, False, True, 0, deleted=True)


def to_document(state: AccessState) -> dict[str, Any]:
    return {
        "uid": state.uid,
        "email": state.email,
        "role": state.role.value if state.role else None,
        "approved": state.approved,
        "disabled": state.disabled,
        "deleted": state.deleted,
        "validAfterMs": state.valid_after_ms,
    }


def from_document(uid: str, d: dict[str, Any]) -> AccessState:
    return AccessState(
        uid=uid,
        email=d.get("email"),
        role=role_of(d.get("role")),
        approved=d.get("approved") is True,
        disabled=bool(d.get("disabled")),
        valid_after_ms=int(d.get("validAfterMs") or 0),
        deleted=bool(d.get("deleted")),
        consents=consent.accepted(d.get(consent.FIELD)),
    )


def ref(uid: str) -> Any:
    return clients.db().collection(COLLECTION).document(uid)


# Set by an erasure (shared/privacy/erasure.py) in the commit that begins it, before it judges
# what blocks it; booking paths read it in their transactions (`closing`).
CLOSING = "closing"


def closing(uid: str, *, tx: Any) -> bool:
    """Whether the account's erasure has begun or is done, read inside `tx`: a booking of it
    commits before the erasure's fence (which then finds the booking and waits) or sees the
    fence, so none lands with an account being erased."""
    snap = ref(uid).get(transaction=tx)
    found = snap.to_dict() if snap.exists else None
    return bool(found and (found.get(CLOSING) or found.get("deleted")))


def get(uid: str, *, tx: Any = None) -> AccessState | None:
    snap = ref(uid).get(transaction=tx)
    data = snap.to_dict() if snap.exists else None
    return from_document(uid, data) if data is not None else None


def write(state: AccessState, *, tx: Any = None, by: str | None = None) -> None:
    # Merged: what Auth mirrors is replaced, the consents (not Auth's) are kept.
    store.set(ref(state.uid), to_document(state), merge=True, tx=tx, by=by)


def _auth() -> Any:
    from firebase_admin import auth

    return auth


def from_auth(uid: str) -> AccessState:
    """Ask Firebase Auth (an API call: for sign-in, account changes and repairs only)."""
    auth = _auth()
    try:
        return from_user_record(auth.get_user(uid, app=clients.firebase_app()))
    except auth.UserNotFoundError:
        return deleted(uid)


def load(uid: str) -> AccessState:
    """The account's access state: one document read.

    An account with no record yet (made before records existed, or by hand in the console)
    gets one from Auth on its first request, and is read from Firestore ever after.
    """
    state = get(uid)
    return state if state is not None else adopt(uid)


def adopt(uid: str) -> AccessState:
    """Make the record of an account that has none, from Auth (one API call): the first
    request, or the first sign-in, of an account made outside the backend."""
    from google.api_core.exceptions import Conflict

    state = from_auth(uid)
    with contextlib.suppress(Conflict):
        store.create(ref(uid), to_document(state), by="system")
        return state
    # A concurrent request, or an account change, wrote it first: that one is current.
    return get(uid) or state


def refresh(uid: str, *, tx: Any = None, by: str | None = None) -> AccessState:
    """Write what Auth holds now (after the backend changed it there) and return it."""
    state = from_auth(uid)
    write(state, tx=tx, by=by)
    return state


def with_claims(state: AccessState, role: Role, approved: bool) -> AccessState:
    return replace(state, role=role, approved=approved)


def mirror(
    uid: str,
    *,
    role: Role,
    approved: bool,
    disabled: bool | None = None,
    tx: Any,
    by: str | None = None,
) -> None:
    """Write the role and approval (and disabled) a change decided into the record, in `tx`
    beside the profile it decided them in: merged, so the revocation instant and consents
    stay what they are. A record not made yet is made whole from Auth. From this commit on the
    record is the truth for role and approval; Auth's claims follow, and the reconciliation
    sets them from the decision if the request fails before they do."""
    if get(uid) is None:
        state = with_claims(from_auth(uid), role, approved)
        write(state if disabled is None else replace(state, disabled=disabled), tx=tx, by=by)
        return
    fields: dict[str, Any] = {"uid": uid, "role": role.value, "approved": approved}
    if disabled is not None:
        fields["disabled"] = disabled
    store.set(ref(uid), fields, merge=True, tx=tx, by=by)


def record_revocation(uid: str, *, by: str | None = None) -> None:
    """Write the revocation instant Auth holds now (it has just revoked the account's tokens)
    into the record, and nothing else of Auth's: a role or approval read from Auth while
    another change is settling would undo it. The instant never moves back, though two
    revocations race; a record not made yet is made whole from Auth."""
    state = from_auth(uid)

    def body(batch: Any) -> None:
        snap = ref(uid).get()
        if not snap.exists:
            store.create(ref(uid), to_document(state), tx=batch, by=by)
            return
        held = from_document(uid, snap.to_dict() or {})
        if held.valid_after_ms >= state.valid_after_ms:
            return
        store.update(
            ref(uid),
            {"validAfterMs": state.valid_after_ms},
            tx=batch,
            by=by,
            unchanged_since=snap.update_time,
        )

    store.run_optimistic(body)

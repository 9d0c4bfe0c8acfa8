"""Account management: the Auth user, its role claims and its profile, kept in step.

Used by the admin-users and users functions and by tools/create_admin.py. Firebase Auth and
Firestore cannot share a transaction, so every operation orders its steps so that a failure
leaves nothing half-made: the Auth user is created first and deleted again if any later step
fails; Firestore documents that must agree are written in one batch. A change of role or
approval is the other way round: decided and committed in Firestore first, guarded by the
profile's version, and Auth's claims then follow from the committed profile (`_settle`).

The rule for what is true once a decision committed and Auth then failed: role and approval
are the backend's decisions, so the profile (and the access record, written in the same
commit) is their truth and Auth's claims are a copy of it. A request whose Auth call fails
after the commit still does what Firestore alone can (the sessions learn or lose the access)
and answers with the decision, which is in force: every request is authenticated from the
access record and the session records, never from the claims. The claims left behind are
set by the reconciliation's next run (shared.identity.reconciliation, through
`settle_claims`), or at once by repeating the decision. Disabled, deleted and revoked stay
Auth's (the backend asks Auth for those first); a deletion is the exception, the tombstone
coming first so that the account's tokens are refused before it is gone from Auth: a failure
after it answers 503 `deletion_unfinished` and the tombstone stays until a repeat finishes
the deletion.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from shared.identity import access, profiles, sessions
from shared.identity.profile_fields import ProfileFields, check_editable, to_document
from shared.platform import clients, clock, logs, outbox, settings, store
from shared.platform.context import ROLES_NEEDING_APPROVAL, Role
from shared.platform.errors import (
    Conflict,
    DependencyUnavailable,
    NotFound,
    is_dependency_failure,
)

log = logs.get("alodoktor.accounts")


@dataclass(frozen=True)
class NewAccount:
    email: str
    role: Role
    display_name: str | None = None
    phone: str | None = None
    password: str | None = None
    send_password_link: bool = False
    uid: str | None = None  # keep an existing id, e.g. when migrating accounts
    approved: bool | None = None  # default: approved unless the role needs an admin's approval
    profile: ProfileFields | None = None


@dataclass
class Created:
    profile: dict[str, Any]
    password_link: str | None = field(default=None, repr=False)


def default_approval(role: Role, requested: bool | None) -> bool:
    if role not in ROLES_NEEDING_APPROVAL:
        return True
    return bool(requested)


def _auth() -> Any:
    from firebase_admin import auth

    return auth


def create(new: NewAccount, *, actor: str) -> Created:
    auth = _auth()
    app = clients.firebase_app()
    approved = default_approval(new.role, new.approved)
    extra = to_document(new.profile) if new.profile else {}
    if new.profile:
        check_editable(new.role, approved, new.profile.model_fields_set, by_admin=True)
    try:
        user = auth.create_user(
            uid=new.uid,
            email=new.email,
            display_name=new.display_name,
            phone_number=new.phone,
            password=new.password,
            app=app,
        )
    except auth.EmailAlreadyExistsError:
        raise Conflict("An account with this e-mail exists.", code="email_taken") from None
    except auth.UidAlreadyExistsError:
        raise Conflict("An account with this id exists.", code="uid_taken") from None
    except auth.PhoneNumberAlreadyExistsError:
        raise Conflict("An account with this phone exists.", code="phone_taken") from None

    try:
        auth.set_custom_user_claims(
            user.uid, {"role": new.role.value, "approved": approved}, app=app
        )
        link = (
            auth.generate_password_reset_link(new.email, app=app)
            if new.send_password_link
            else None
        )
        now = clock.now()
        profile: dict[str, Any] = {
            **extra,
            "uid": user.uid,
            "email": new.email,
            "emailLower": new.email.lower(),
            "displayName": new.display_name,
            "phone": new.phone,
            "role": new.role.value,
            "approved": approved,
            "approval": {"status": "approved" if approved else "pending", "at": now, "by": actor},
            "disabled": False,
            "createdAt": now,
            "updatedAt": now,
        }
        batch = clients.db().batch()
        store.create(profiles.ref(user.uid), profile, tx=batch, by=actor)
        profiles.write_listing(profile, tx=batch)
        profiles.record_sign_up(batch, user.uid, new.role, actor=actor, at=now)
        account = access.with_claims(access.from_user_record(user), new.role, approved)
        access.write(account, tx=batch, by=actor)
        if link:
            outbox.queue(batch, user.uid, new.email, "set_password", {"link": link}, actor)
        _commit_create(batch)
    except BaseException:
        _undo_create(user.uid)
        raise
    return Created(profile=profile, password_link=link)


def _commit_create(batch: Any) -> None:
    from google.api_core.exceptions import AlreadyExists

    try:
        batch.commit()
    except AlreadyExists:
        raise Conflict("A profile with this id exists already.", code="profile_exists") from None


def _undo_create(uid: str) -> None:
    try:
        _auth().delete_user(uid, app=clients.firebase_app())
    except Exception:
        # Leaves an Auth user without a profile: say so loudly, with the id to clean up.
        log.exception("could not remove Auth user %s after a failed account creation", uid)


def load(uid: str) -> dict[str, Any]:
    profile = profiles.get(uid)
    if profile is None:
        raise NotFound()
    return profile


def _read(uid: str) -> tuple[dict[str, Any], Any]:
    """The profile and its update time; NotFound if there is none, or it is what an erased
    account leaves (shared.privacy: never changed, approved or listed again)."""
    profile, version = profiles.read(uid)
    if profile is None or profile.get("erased"):
        raise NotFound()
    return profile, version


def revoke_access(uid: str, *, by: str | None = None) -> int:
    """End every session and refresh token of the user: their next request is refused.

    The access record learns the new revocation instant before the sessions end, so a sign-in
    racing this either sees it or has its new session ended here. Returns the sessions ended.
    """
    with contextlib.suppress(_auth().UserNotFoundError):
        _auth().revoke_refresh_tokens(uid, app=clients.firebase_app())
    access.record_revocation(uid, by=by)
    return sessions.revoke_all(uid)


def _end_sessions(uid: str, *, by: str) -> None:
    """`revoke_access` after a committed change that narrowed access; with Auth unreachable,
    the account's sessions still end (Firestore alone): they hold the role and approval the
    change took away, where a bearer token is judged by the access record, already right."""
    try:
        revoke_access(uid, by=by)
    except Exception as exc:
        if not is_dependency_failure(exc):
            raise
        # revoke_access ends the sessions and Auth's tokens; which of the two failed, the
        # sessions are ended again on their own (a failure here too answers 503).
        log.warning("access of %s not revoked in full (%r): ending its sessions alone", uid, exc)
        sessions.revoke_all(uid)


def _unfinished(exc: BaseException) -> DependencyUnavailable:
    """The answer when Firestore fails after a decision committed: not "nothing was changed"."""
    log.warning("a committed account decision could not be followed through: %r", exc)
    return DependencyUnavailable(
        "The change is made and in force; what follows it (Firebase Auth's claims, the"
        " account's sessions) could not all be done. Asking again with the same change"
        " finishes it (it is not made twice); the scheduled Auth reconciliation sets the claims.",
        code="decision_unfinished",
    )


@dataclass(frozen=True)
class AccountChanges:
    role: Role | None = None
    disabled: bool | None = None
    approved: bool | None = None
    fields: ProfileFields | None = None


def update(
    uid: str,
    changes: AccountChanges,
    *,
    actor: str,
    by_admin: bool,
    current: dict[str, Any] | None = None,
    read_at: Any = None,
) -> dict[str, Any]:
    """Apply changes to the Auth user and the profile; revoke sessions when access changes.

    Auth unreachable after the commit leaves the claims to the reconciliation (the module's
    rule) and still ends the sessions a change of role, disabling or withdrawal narrowed.

    Only the fields that change are written, and only if the profile is still the version read
    (else it is read again and the change decided afresh), so two edits of different fields
    both land, and an edit racing an approval neither undoes it nor changes a field the
    approval locked. Auth is asked only for what it holds and what changes: the display name
    or phone when they differ from the profile's, disabled (both before Firestore: Auth may
    refuse a phone), the role claims (after the commit, from the committed profile: `_settle`).
    The access record is written only when role, approval or disabled change. `current` and
    `read_at`: the profile and its update time, when the caller has just read them.
    """
    auth = _auth()
    app = clients.firebase_app()
    if current is None or read_at is None or current.get("erased"):
        current, read_at = _read(uid)
    first: list[tuple[dict[str, Any], Any]] = [(current, read_at)]
    sent = changes.fields.model_fields_set if changes.fields else set()
    doc = to_document(changes.fields) if changes.fields else {}
    _decide_update(current, changes, sent, by_admin=by_admin)  # refused before Auth is asked
    if doc.get("clinicUid"):
        clinic = profiles.get(doc["clinicUid"])
        if clinic is None or clinic.get("role") != Role.CLINIC.value:
            raise NotFound("No clinic with this id.", code="clinic_not_found")

    user_update: dict[str, Any] = {}
    if "displayName" in doc and doc["displayName"] != current.get("displayName"):
        user_update["display_name"] = doc["displayName"] or auth.DELETE_ATTRIBUTE
    if "phone" in doc and doc["phone"] != current.get("phone"):
        user_update["phone_number"] = doc["phone"] or auth.DELETE_ATTRIBUTE
    if changes.disabled is not None:
        user_update["disabled"] = changes.disabled
    try:
        if user_update:
            _update_user(uid, app, user_update)
    except auth.PhoneNumberAlreadyExistsError:
        raise Conflict("Another account has this phone.", code="phone_taken") from None
    except auth.UserNotFoundError:
        raise NotFound() from None

    def body(batch: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        profile, version = first.pop() if first else _read(uid)
        role, approved = _decide_update(profile, changes, sent, by_admin=by_admin)
        now = clock.now()
        patch: dict[str, Any] = {**doc, "updatedAt": now}
        if role.value != profile["role"]:
            patch["role"] = role.value
        if approved != bool(profile.get("approved")) or "role" in patch:
            patch["approved"] = approved
            patch["approval"] = {
                "status": "approved" if approved else "pending",
                "at": now,
                "by": actor,
            }
        if changes.disabled is not None:
            patch["disabled"] = changes.disabled
        store.update(profiles.ref(uid), patch, tx=batch, by=actor, unchanged_since=version)
        updated = {**profile, **patch}
        profiles.write_listing(updated, tx=batch)
        if "approved" in patch or changes.disabled is not None:
            access.mirror(
                uid, role=role, approved=approved, disabled=changes.disabled, tx=batch, by=actor
            )
        return profile, updated

    before: dict[str, Any]
    updated: dict[str, Any]
    before, updated = store.run_optimistic(body)
    claims_changed = (updated["role"], bool(updated.get("approved"))) != (
        before["role"],
        bool(before.get("approved")),
    )
    try:
        # A repeat of a role or approval change settles what a failure left behind: the
        # claims, and the sessions that still hold more than the decision (_settle).
        if claims_changed or changes.role is not None or changes.approved is not None:
            _settle(uid, actor=actor)
        if changes.disabled is True:
            _end_sessions(uid, by=actor)
    except Exception as exc:
        if not is_dependency_failure(exc):
            raise
        raise _unfinished(exc) from exc
    return updated


def _decide_update(
    profile: dict[str, Any], changes: AccountChanges, sent: set[str], *, by_admin: bool
) -> tuple[Role, bool]:
    """The role and approval `changes` give this profile; FieldRefusal if it may not make
    them (a licence is locked once the profile read is approved)."""
    role = changes.role or Role(profile["role"])
    if changes.approved is not None:
        approved = default_approval(role, changes.approved)
    elif role.value != profile["role"]:
        approved = default_approval(role, None)
    else:
        approved = bool(profile.get("approved"))
    check_editable(role, bool(profile.get("approved")), set(sent), by_admin=by_admin)
    return role, approved


def _update_user(uid: str, app: Any, fields: dict[str, Any]) -> None:
    """`auth.update_user` without its read-back: firebase-admin asks Auth for the whole user
    after updating it (a second API call) only to return it, and nothing here needs it.
    tests/test_users.py counts one call; an SDK without the inner manager gets the public one."""
    auth = _auth()
    manager = getattr(auth._get_client(app), "_user_manager", None)
    if manager is None or not hasattr(manager, "update_user"):
        auth.update_user(uid, app=app, **fields)
    else:
        manager.update_user(uid, **fields)


SETTLE_ROUNDS = 8


def _settle(uid: str, *, actor: str, auth_may_fail: bool = True) -> dict[str, Any]:
    """Make Auth's role claims, the access record and the sessions say what the committed
    profile says, after a change of role or approval committed (or was found in force).

    Auth cannot join a Firestore commit, so its claims follow the commit: read the profile,
    set them (and the record) from it, read the profile again, and go round while its role or
    approval changed meanwhile. Whatever the interleaving, the last claims written are of the
    last decision committed: a request whose write was overtaken sees so on its second read,
    and a decision committed after that read is settled by its own request. The account's live
    sessions follow the decision from what they hold (`_sessions_follow`), not from what this
    request changed: so a repeat of a decision (after a 503 decision_unfinished) or the
    reconciliation ends the sessions a failure left holding more. Returns the profile last read.

    `auth_may_fail`: Auth unreachable leaves the claims as they are (logged) and the rest is
    still done: the decision is in force without them, and the reconciliation sets them.
    """
    auth = _auth()
    profile: dict[str, Any] | None = None
    for _ in range(SETTLE_ROUNDS):
        profile = load(uid)
        role, approved = Role(profile["role"]), bool(profile.get("approved"))
        try:
            _set_claims(uid, role, approved)
        except auth.UserNotFoundError:
            raise NotFound() from None
        except Exception as exc:
            if not (auth_may_fail and is_dependency_failure(exc)):
                raise
            log.warning(
                "claims of %s not set after a committed decision (%r): the Auth reconciliation"
                " sets them",
                uid,
                exc,
            )
        held = access.get(uid)
        if held is None or (held.role, held.approved) != (role, approved):
            batch = clients.db().batch()
            access.mirror(uid, role=role, approved=approved, tx=batch, by=actor)
            batch.commit()
        _sessions_follow(uid, role, approved, by=actor)
        again = load(uid)
        if (again["role"], bool(again.get("approved"))) == (role.value, approved):
            return again
    log.warning("account %s kept changing while its claims were settled", uid)
    assert profile is not None
    return profile


def _sessions_follow(uid: str, role: Role, approved: bool, *, by: str) -> None:
    """Make the account's live sessions hold the decision `role`, `approved`: a session that
    holds more (another role, or an approval the decision withdrew) ends them all, as a change
    that narrows access does; with none such, an approval is learnt in place by the sessions
    not yet approved (no sign-out needed). Judged from the sessions themselves, so it is the
    same whether this request made the decision or repeats it."""
    from google.cloud.firestore import FieldFilter

    live = [
        sessions.SessionRecord.from_doc(snap.id, snap.to_dict() or {})
        for snap in clients.db()
        .collection(sessions.COLLECTION)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("revoked", "==", False))
        .stream()
    ]
    if any(s.role is not role or (s.approved and not approved) for s in live):
        _end_sessions(uid, by=by)
    elif approved and any(not s.approved for s in live):
        sessions.grant_approval(uid)


def _set_claims(uid: str, role: Role, approved: bool) -> None:
    """Auth's claims to say `role` and `approved`, other claims kept; no write when they do."""
    auth = _auth()
    app = clients.firebase_app()
    claims = auth.get_user(uid, app=app).custom_claims or {}
    if claims.get("role") != role.value or claims.get("approved") is not approved:
        auth.set_custom_user_claims(
            uid, {**claims, "role": role.value, "approved": approved}, app=app
        )


def settle_claims(uid: str, *, actor: str) -> dict[str, Any]:
    """Set Auth's claims from the committed decision (the profile), for the reconciliation
    that found them differing from the access record: a request that failed to after its
    commit, or claims changed in the console. Raises what Auth raises; NotFound when the
    profile or the Auth user is gone. Returns the profile the claims now say."""
    return _settle(uid, actor=actor, auth_may_fail=False)


def decide_approval(uid: str, approve: bool, reason: str | None, *, actor: str) -> dict[str, Any]:
    """Approve or reject an account, once: the decision is written only if the profile is
    still the version read (else read again and decided afresh), so of decisions racing each
    commits in turn, a repeat of the decision in force changes nothing and queues no second
    notice, and a different one is a change with its own notice. An admin may reverse a
    decision (an approval withdrawn ends the account's sessions). Auth's claims follow the
    commit (`_settle`); Auth unreachable there still answers the decision, which is in force
    (the sessions learn or lose it from Firestore alone), and leaves the claims to the
    reconciliation or to a repeat of the decision. Firestore failing after the commit answers
    503 `decision_unfinished`, which says the decision is made."""
    status = "approved" if approve else "rejected"

    def body(batch: Any) -> tuple[dict[str, Any], bool]:
        profile, version = _read(uid)
        role = Role(profile["role"])
        if role not in ROLES_NEEDING_APPROVAL:
            raise Conflict(
                f"A {role.value} account needs no approval.", code="approval_not_applicable"
            )
        in_force = (
            bool(profile.get("approved"))
            if approve
            else (
                not profile.get("approved")
                and (profile.get("approval") or {}).get("status") == status
            )
        )
        if in_force:
            return profile, False
        now = clock.now()
        patch = {
            "approved": approve,
            "approval": {"status": status, "reason": reason, "at": now, "by": actor},
            "updatedAt": now,
        }
        store.update(profiles.ref(uid), patch, tx=batch, by=actor, unchanged_since=version)
        updated = {**profile, **patch}
        profiles.write_listing(updated, tx=batch)
        access.mirror(uid, role=role, approved=approve, tx=batch, by=actor)
        if profile.get("email"):
            outbox.queue(
                batch,
                uid,
                profile["email"],
                "approval_decided",
                {"approved": approve, "reason": reason},
                actor,
            )
        return updated, True

    store.run_optimistic(body)
    try:
        return _settle(uid, actor=actor)
    except Exception as exc:
        if not is_dependency_failure(exc):
            raise
        raise _unfinished(exc) from exc


def has_upcoming_confirmed_appointments(doctor_uid: str) -> bool:
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection("appointments")
        .where(filter=FieldFilter("doctorUid", "==", doctor_uid))
        .where(filter=FieldFilter("status", "==", "confirmed"))
        .where(filter=FieldFilter("start", ">", clock.now()))
        .limit(1)
    )
    return any(True for _ in query.stream())


def delete(uid: str, *, force: bool, actor: str) -> None:
    """Remove the Auth account, profile and listing; records that must be kept stay.

    The tombstone is written before Auth is asked, so the account's tokens are refused from
    then on; a failure after it answers 503 `deletion_unfinished` (the account is closed, and
    a repeat finishes the deletion), and the reconciliation never lifts that tombstone."""
    profile = load(uid)
    doctor = profile.get("role") == Role.DOCTOR.value
    if doctor and not force and has_upcoming_confirmed_appointments(uid):
        raise Conflict(
            "This doctor has upcoming confirmed appointments; cancel them or pass force=true.",
            code="doctor_has_upcoming_appointments",
        )
    revoke_access(uid, by=actor)
    # The tombstone first: from here on the account's unexpired tokens are refused.
    access.write(access.deleted(uid), by=actor)
    try:
        with contextlib.suppress(_auth().UserNotFoundError):
            _auth().delete_user(uid, app=clients.firebase_app())
        store.delete(profiles.directory_ref(uid), by=actor)
        store.delete(profiles.ref(uid), by=actor)
    except Exception as exc:
        if not is_dependency_failure(exc):
            raise
        log.warning("deletion of %s left unfinished after its tombstone: %r", uid, exc)
        raise DependencyUnavailable(
            "The account is closed: its sign-ins are refused from now on. Removing it from"
            " Firebase Auth and its profile could not be finished; ask again to finish it.",
            code="deletion_unfinished",
        ) from exc


def password_reset_link(uid: str, *, actor: str) -> str:
    profile = load(uid)
    email = profile.get("email")
    if not email:
        raise Conflict("This account has no e-mail address.", code="no_email")
    link: str = _auth().generate_password_reset_link(email, app=clients.firebase_app())
    batch = clients.db().batch()
    outbox.queue(batch, uid, email, "password_reset", {"link": link}, actor)
    batch.commit()
    return link


def reveal_links() -> bool:
    """Password links are handed back in API answers only on the local stack."""
    return settings.get().auth_emulated

"""User profile documents (`users/{uid}`), which mirror the role and approval claims."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from shared.identity import access
from shared.identity.access import AccessState
from shared.platform import clients, clock, eventlog, store
from shared.platform.context import ROLES_NEEDING_APPROVAL, Role

COLLECTION = "users"


def ref(uid: str) -> Any:
    return clients.db().collection(COLLECTION).document(uid)


def ensure_on_sign_in(account: AccessState, display_name: str | None) -> AccessState:
    """Make sure a signing-in user has role claims, an access record and a profile.

    A first sign-in with no role becomes a patient. The role is never taken from the caller:
    it comes from the custom claims an admin set, or is `patient`.
    """
    from firebase_admin import auth
    from google.api_core.exceptions import Conflict

    if account.role is None:
        app = clients.firebase_app()
        existing = auth.get_user(account.uid, app=app).custom_claims or {}
        auth.set_custom_user_claims(
            account.uid, {**existing, "role": Role.PATIENT.value, "approved": True}, app=app
        )
        account = access.with_claims(account, Role.PATIENT, True)
        access.write(account, by=account.uid)
    assert account.role is not None
    approved = account.approved or account.role not in ROLES_NEEDING_APPROVAL
    if not ref(account.uid).get().exists:
        now = clock.now()
        batch = clients.db().batch()
        store.create(
            ref(account.uid),
            {
                "uid": account.uid,
                "email": account.email,
                "emailLower": (account.email or "").lower() or None,
                "displayName": display_name,
                "role": account.role.value,
                "approved": approved,
                "disabled": False,
                "createdAt": now,
            },
            tx=batch,
            by=account.uid,
        )
        record_sign_up(batch, account.uid, account.role, actor=account.uid, at=now)
        with contextlib.suppress(Conflict):  # a concurrent first sign-in made the same one
            batch.commit()
    return account


def record_sign_up(batch: Any, uid: str, role: Role, *, actor: str, at: datetime) -> None:
    """The `user_signed_up` event, in the commit that creates the profile: once per profile
    (its creation time tells apart an id reused after the account was deleted)."""
    eventlog.record(
        batch,
        "user_signed_up",
        f"users/{uid}",
        actor=actor,
        at=at,
        uid=uid,
        data={"role": role.value},
        occurrence=str(int(at.timestamp() * 1_000_000)),
    )


DIRECTORY = "directory"


def directory_ref(uid: str) -> Any:
    return clients.db().collection(DIRECTORY).document(uid)


def get(uid: str) -> dict[str, Any] | None:
    return read(uid)[0]


def read(uid: str) -> tuple[dict[str, Any] | None, Any]:
    """The profile (None if there is none) and its update time, for a write that must find
    it unchanged (`store.update(..., unchanged_since=...)`)."""
    snap = ref(uid).get()
    data: dict[str, Any] | None = snap.to_dict() if snap.exists else None
    return data, snap.update_time if snap.exists else None


def display_names(uids: list[str]) -> dict[str, str]:
    """The display names of these accounts that have one, in one batched read (a page of
    appointments shows its patients by name, not by uid)."""
    unique = sorted(set(uids))
    if not unique:
        return {}
    snaps = clients.db().get_all([ref(uid) for uid in unique], field_paths=["displayName"])
    names: dict[str, str] = {}
    for snap in snaps:
        name = (snap.to_dict() or {}).get("displayName") if snap.exists else None
        if isinstance(name, str) and name.strip():
            names[snap.id] = name
    return names


def write_listing(profile: dict[str, Any], *, tx: Any) -> None:
    """Keep the public directory entry in step with the profile, in the same transaction."""
    from shared.identity.profile_fields import directory_entry

    entry = directory_entry(profile)
    if entry is None:
        store.delete(directory_ref(profile["uid"]), tx=tx)
    else:
        store.set(directory_ref(profile["uid"]), entry, tx=tx)


def list_profiles(
    *,
    role: Role | None,
    approved: bool | None,
    disabled: bool | None,
    email_prefix: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Profiles for admins: filtered, newest first; an e-mail prefix search sorts by e-mail."""
    from google.cloud.firestore import FieldFilter, Query

    from shared.platform import pagination

    collection = clients.db().collection(COLLECTION)
    query: Any = collection
    for name, value in (
        ("role", role.value if role else None),
        ("approved", approved),
        ("disabled", disabled),
    ):
        if value is not None:
            query = query.where(filter=FieldFilter(name, "==", value))
    if email_prefix:
        prefix = email_prefix.lower()
        query = query.where(filter=FieldFilter("emailLower", ">=", prefix)).where(
            filter=FieldFilter("emailLower", "<", prefix + "\uf8ff")
        )
        order = [("emailLower", Query.ASCENDING)]
    else:
        order = [("createdAt", Query.DESCENDING)]
    snaps, next_cursor = pagination.run_page(collection, query, order, limit=limit, cursor=cursor)
    return [s.to_dict() for s in snaps], next_cursor


def list_directory(
    kind: Role,
    *,
    specialty: str | None = None,
    language: str | None = None,
    currency: str | None = None,
    min_price_minor: int | None = None,
    max_price_minor: int | None = None,
    city: str | None = None,
    delivery: bool | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Public listings of approved providers; cheapest first when a price range is asked."""
    from google.cloud.firestore import FieldFilter, Query

    from shared.platform import pagination

    collection = clients.db().collection(DIRECTORY)
    query: Any = collection.where(filter=FieldFilter("kind", "==", kind.value))
    equal = {
        "specialty": specialty,
        "currency": currency,
        "cityKey": city.strip().lower() if city else None,
        "delivery": delivery,
    }
    for name, value in equal.items():
        if value is not None:
            query = query.where(filter=FieldFilter(name, "==", value))
    if language:
        query = query.where(filter=FieldFilter("languages", "array_contains", language))
    priced = min_price_minor is not None or max_price_minor is not None
    if min_price_minor is not None:
        query = query.where(filter=FieldFilter("priceMinor", ">=", min_price_minor))
    if max_price_minor is not None:
        query = query.where(filter=FieldFilter("priceMinor", "<=", max_price_minor))
    order = [("priceMinor", Query.ASCENDING)] if priced else [("listedAt", Query.DESCENDING)]
    snaps, next_cursor = pagination.run_page(collection, query, order, limit=limit, cursor=cursor)
    return [s.to_dict() for s in snaps], next_cursor

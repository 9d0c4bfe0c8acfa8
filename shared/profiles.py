"""User profile documents (`users/{uid}`), which mirror the role and approval claims."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from shared import clients, store
from shared.auth import UserState
from shared.context import ROLES_NEEDING_APPROVAL, Role

COLLECTION = "users"


def ref(uid: str) -> Any:
    return clients.db().collection(COLLECTION).document(uid)


def ensure_on_sign_in(user: UserState, display_name: str | None) -> tuple[Role, bool]:
    """Make sure a signing-in user has role claims and a profile; returns (role, approved).

    A first sign-in with no role becomes a patient. The role is never taken from the caller:
    it comes from the custom claims an admin set, or is `patient`.
    """
    from firebase_admin import auth
    from google.api_core.exceptions import Conflict

    role, approved = user.role, user.approved
    if role is None:
        role, approved = Role.PATIENT, True
        existing = auth.get_user(user.uid, app=clients.firebase_app()).custom_claims or {}
        auth.set_custom_user_claims(
            user.uid,
            {**existing, "role": role.value, "approved": approved},
            app=clients.firebase_app(),
        )
    if role not in ROLES_NEEDING_APPROVAL:
        approved = True
    if not ref(user.uid).get().exists:
        with contextlib.suppress(Conflict):  # a concurrent first sign-in made the same one
            store.create(
                ref(user.uid),
                {
                    "uid": user.uid,
                    "email": user.email,
                    "displayName": display_name,
                    "role": role.value,
                    "approved": approved,
                    "disabled": False,
                    "createdAt": datetime.now(UTC),
                },
                by=user.uid,
            )
    return role, approved

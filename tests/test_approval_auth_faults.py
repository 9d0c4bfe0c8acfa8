"""Firebase Auth failing after an account decision committed: the decision stands, the answer
says so, and the reconciliation finishes it in Auth instead of undoing it.

The admin-users function is served in this process (as functions-framework serves it, on the
stack's emulators) so that its Auth calls can be made to fail; the reconciliation then runs
through the gateway, where Auth works, as Cloud Scheduler's next run would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from shared.identity import access, profiles
from shared.platform import clients
from shared.platform.context import Role
from tests.support import bearer, create_user, id_token, problem, sign_in
from tests.test_access import _reconcile
from tests.test_account_races import _assert_consistent, _claims
from tests.test_health_disclosure import _served

# Every Auth Admin API call the account paths make once a request is authenticated (verifying
# an ID token asks nothing of Auth): all of them fail as they would with Auth unreachable.
AUTH_CALLS = (
    "get_user",
    "set_custom_user_claims",
    "revoke_refresh_tokens",
    "update_user",
    "delete_user",
)


def _unavailable(*args: Any, **kw: Any) -> None:
    from firebase_admin import exceptions

    raise exceptions.UnavailableError("injected: Firebase Auth is unreachable")


@contextlib.contextmanager
def _auth_down(*names: str) -> Iterator[None]:
    """Auth's calls `names` (default: all of AUTH_CALLS) fail in this process meanwhile."""
    from firebase_admin import auth

    with pytest.MonkeyPatch.context() as patch:
        for name in names or AUTH_CALLS:
            patch.setattr(auth, name, _unavailable)
        yield


def _in_process(method: str, path: str, token: str, body: Any = None) -> Any:
    """A request to admin-users served in this process (its routes without the prefix)."""
    return (
        _served("admin-users")
        .test_client()
        .open(path, method=method, json=body, headers={"Authorization": f"Bearer {token}"})
    )


def _doctor(stack: Any, *, approved: bool) -> Any:
    user = create_user(stack, Role.DOCTOR, approved=approved)
    access.refresh(user.uid, by="test")  # as every account the backend makes has one
    return user


def _admin_token(stack: Any) -> str:
    """An admin's ID token, its access record made (authenticating it then asks Auth nothing)."""
    user = create_user(stack, Role.ADMIN)
    access.refresh(user.uid, by="test")
    return id_token(stack, user)


def test_an_approval_whose_claims_failed_is_finished_by_the_reconciliation(stack):
    doctor = _doctor(stack, approved=False)
    browser = sign_in(stack, doctor)
    problem(browser.get("/appointments"), 403, "not_approved")
    token = _admin_token(stack)

    with _auth_down("set_custom_user_claims"):
        answered = _in_process("POST", f"/{doctor.uid}/approval", token, {"decision": "approve"})

    # The decision committed and is in force: the answer says so, not "nothing was changed".
    assert answered.status_code == 200, answered.get_data(as_text=True)
    assert answered.get_json()["approved"] is True
    assert _claims(doctor.uid).get("approved") is False  # Auth still lags
    assert browser.get("/appointments").status_code == 200  # the live session learnt it
    assert bearer(stack, doctor).get("/appointments").status_code == 200

    # Auth is the truth only for what only Auth changes: the decision is pushed to Auth.
    assert doctor.uid in _reconcile(stack)["repaired"]
    _assert_consistent(doctor.uid)
    assert access.get(doctor.uid).approved is True
    assert bearer(stack, doctor).get("/appointments").status_code == 200
    assert doctor.uid not in _reconcile(stack)["repaired"]  # in step now


def test_a_rejection_with_auth_down_ends_the_sessions(stack):
    doctor = _doctor(stack, approved=True)
    browser = sign_in(stack, doctor)
    assert browser.get("/appointments").status_code == 200
    token = _admin_token(stack)

    with _auth_down():
        answered = _in_process(
            "POST", f"/{doctor.uid}/approval", token, {"decision": "reject", "reason": "licence"}
        )

    assert answered.status_code == 200, answered.get_data(as_text=True)
    assert answered.get_json()["approval"]["status"] == "rejected"
    problem(browser.get("/session"), 401, "session_revoked")
    problem(bearer(stack, doctor).get("/appointments"), 403, "not_approved")


def test_the_reconciliation_never_lets_a_rejected_doctor_back_in(stack):
    doctor = _doctor(stack, approved=True)
    token = _admin_token(stack)
    with _auth_down():
        rejected = _in_process(
            "POST", f"/{doctor.uid}/approval", token, {"decision": "reject", "reason": "licence"}
        )
    assert rejected.status_code == 200, rejected.get_data(as_text=True)
    assert _claims(doctor.uid).get("approved") is True  # Auth still says approved

    assert doctor.uid in _reconcile(stack)["repaired"]
    _assert_consistent(doctor.uid)
    assert access.get(doctor.uid).approved is False
    problem(bearer(stack, doctor).get("/appointments"), 403, "not_approved")


def test_a_role_change_with_auth_down_bites_at_once(stack):
    user = _doctor(stack, approved=True)
    browser = sign_in(stack, user)
    token = _admin_token(stack)

    with _auth_down():
        answered = _in_process("PATCH", f"/{user.uid}", token, {"role": "patient"})

    assert answered.status_code == 200, answered.get_data(as_text=True)
    assert answered.get_json()["role"] == "patient"
    problem(browser.get("/session"), 401, "session_revoked")
    assert access.get(user.uid).role is Role.PATIENT


def test_a_role_change_left_unsettled_is_finished_by_the_reconciliation(stack):
    user = _doctor(stack, approved=True)
    browser = sign_in(stack, user)
    token = _admin_token(stack)
    with _auth_down("set_custom_user_claims"):
        answered = _in_process("PATCH", f"/{user.uid}", token, {"role": "patient"})
    assert answered.status_code == 200, answered.get_data(as_text=True)

    problem(browser.get("/session"), 401, "session_revoked")

    assert user.uid in _reconcile(stack)["repaired"]
    assert _claims(user.uid) == {"role": "patient", "approved": True}
    assert access.get(user.uid).role is Role.PATIENT


def test_claims_changed_in_the_console_are_set_back_to_the_decision(stack, admin):
    """Role and approval are the backend's decisions: claims given in the console are drift
    the reconciliation repairs in Auth, and the access record keeps what was decided."""
    doctor = _doctor(stack, approved=False)
    from firebase_admin import auth

    auth.set_custom_user_claims(
        doctor.uid, {"role": "doctor", "approved": True}, app=clients.firebase_app()
    )
    assert doctor.uid in _reconcile(stack)["repaired"]
    assert _claims(doctor.uid) == {"role": "doctor", "approved": False}
    assert access.get(doctor.uid).approved is False
    problem(bearer(stack, doctor).get("/appointments"), 403, "not_approved")


def test_a_deletion_auth_failed_to_finish_stays_closed_and_says_so(stack):
    user = create_user(stack, Role.PATIENT)
    access.refresh(user.uid, by="test")
    client = bearer(stack, user)
    token = _admin_token(stack)
    with _auth_down("delete_user"):
        answered = _in_process("DELETE", f"/{user.uid}", token)

    assert answered.status_code == 503, answered.get_data(as_text=True)
    assert answered.get_json()["code"] == "deletion_unfinished"
    problem(client.get("/session"), 401)
    # The Auth user is still there, but the reconciliation never lifts the backend's tombstone.
    _reconcile(stack)
    assert access.get(user.uid).deleted
    problem(bearer(stack, user).get("/session"), 401, "user_not_found")

    # Asking again finishes it.
    again = _in_process("DELETE", f"/{user.uid}", token)
    assert again.status_code == 204, again.get_data(as_text=True)
    assert profiles.get(user.uid) is None

"""Concurrent account changes: profile edits, approval decisions and both at once.

Each test fires its requests at the gateway at the same instant (threads held at a barrier),
over several rounds, and then checks that nothing was lost and that the profile, the access
record and the Auth claims agree.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import requests
from google.cloud.firestore import FieldFilter

from shared.identity import access, profiles
from shared.platform import clients, outbox
from shared.platform.context import Role
from tests.support import Api, bearer, create_user

ROUNDS = 5


def _at_once(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Run the calls in threads released together; their responses in the same order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], requests.Response]) -> requests.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _claims(uid: str) -> dict[str, Any]:
    from firebase_admin import auth

    return auth.get_user(uid, app=clients.firebase_app()).custom_claims or {}


def _assert_consistent(uid: str) -> dict[str, Any]:
    """Profile, listing, access record and Auth claims tell the same approval; the profile."""
    profile = profiles.get(uid)
    assert profile is not None
    approved = profile["approved"]
    status = profile["approval"]["status"]
    assert (status == "approved") is approved, profile["approval"]
    record = access.get(uid)
    assert record is not None
    assert (record.role, record.approved) == (Role(profile["role"]), approved), (record, profile)
    claims = _claims(uid)
    assert (claims.get("role"), claims.get("approved")) == (profile["role"], approved), claims
    assert profiles.directory_ref(uid).get().exists is approved
    return profile


def _decisions(uid: str) -> list[dict[str, Any]]:
    """The approval_decided notices of the account, in the order they were committed."""
    snaps = (
        clients.db()
        .collection(outbox.NOTIFICATIONS)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("kind", "==", "approval_decided"))
        .get()
    )
    return [s.to_dict()["data"] for s in sorted(snaps, key=lambda s: s.create_time)]


def _doctor(stack: Any) -> tuple[str, Api]:
    user = create_user(stack, Role.DOCTOR, approved=False)
    access.refresh(user.uid, by="test")  # as every account the backend makes has one
    return user.uid, bearer(stack, user)


def test_simultaneous_profile_edits_of_different_fields_both_land(stack):
    uid, api = _doctor(stack)
    for n in range(ROUNDS):
        bio = f"Round {n}."
        languages = ["id", "en"] if n % 2 else ["en", "tr"]
        answers = _at_once(
            [
                partial(api.request, "PATCH", "/users/me", json={"bio": bio}),
                partial(api.request, "PATCH", "/users/me", json={"languages": languages}),
            ]
        )
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        profile = profiles.get(uid)
        assert profile is not None
        assert (profile.get("bio"), profile.get("languages")) == (bio, languages), f"round {n}"


def test_a_profile_edit_racing_an_approval_keeps_the_approval_and_the_licence_lock(stack, admin):
    for n in range(ROUNDS):
        uid, api = _doctor(stack)
        api.request(
            "PATCH", "/users/me", json={"licenseNumber": "SIP-OLD", "specialty": "general"}
        ).raise_for_status()
        licence = "SIP-" + uuid.uuid4().hex[:6]
        edit, approval = _at_once(
            [
                partial(api.request, "PATCH", "/users/me", json={"licenseNumber": licence}),
                partial(admin.post, f"/admin-users/{uid}/approval", json={"decision": "approve"}),
            ]
        )
        assert approval.status_code == 200, approval.text
        profile = _assert_consistent(uid)
        assert profile["approved"] is True, f"round {n}"
        if edit.status_code == 200:
            # The edit came first: the approval was the last write, of the new licence.
            assert profile["licenseNumber"] == licence, f"round {n}"
            assert profile["updatedAt"] == profile["approval"]["at"], f"round {n}: edited after"
        else:
            assert edit.status_code == 403, edit.text
            assert edit.json()["code"] == "field_locked"
            assert profile["licenseNumber"] == "SIP-OLD", f"round {n}"


def test_simultaneous_identical_decisions_are_made_once(stack, admin):
    other_admin = bearer(stack, create_user(stack, Role.ADMIN))
    for n in range(3):
        uid, _ = _doctor(stack)
        answers = _at_once(
            [
                partial(a.post, f"/admin-users/{uid}/approval", json={"decision": "approve"})
                for a in [admin, other_admin] * 3
            ]
        )
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert all(a.json()["approved"] is True for a in answers)
        _assert_consistent(uid)
        assert _decisions(uid) == [{"approved": True, "reason": None}], f"round {n}"


def test_conflicting_decisions_serialize_with_one_notice_per_change(stack, admin):
    other_admin = bearer(stack, create_user(stack, Role.ADMIN))
    approve = {"decision": "approve"}
    reject = {"decision": "reject", "reason": "licence not verifiable"}
    for n in range(ROUNDS):
        uid, _ = _doctor(stack)
        answers = _at_once(
            [
                partial(a.post, f"/admin-users/{uid}/approval", json=body)
                for a, body in [(admin, approve), (other_admin, reject)] * 3
            ]
        )
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        profile = _assert_consistent(uid)
        decided = [d["approved"] for d in _decisions(uid)]
        assert decided, f"round {n}: no notice"
        # Each notice is a change from the state before it, and the last is what holds.
        assert all(a != b for a, b in itertools.pairwise(decided)), decided
        assert decided[-1] is profile["approved"], (decided, profile["approval"])


def test_a_repeated_decision_settles_claims_a_failure_left_behind(stack, admin):
    uid, _ = _doctor(stack)
    approve = {"decision": "approve"}
    assert admin.post(f"/admin-users/{uid}/approval", json=approve).status_code == 200
    # As if setting Auth's claims had failed after the decision committed (a 503).
    from firebase_admin import auth

    auth.set_custom_user_claims(
        uid, {"role": "doctor", "approved": False}, app=clients.firebase_app()
    )
    again = admin.post(f"/admin-users/{uid}/approval", json=approve)
    assert again.status_code == 200, again.text
    _assert_consistent(uid)
    assert _decisions(uid) == [{"approved": True, "reason": None}]


def test_an_erased_profile_is_neither_approved_nor_changed(stack, admin):
    from shared.platform import store

    uid, _ = _doctor(stack)
    store.update(profiles.ref(uid), {"erased": True, "disabled": True}, by="test")
    approve = admin.post(f"/admin-users/{uid}/approval", json={"decision": "approve"})
    assert approve.status_code == 404, approve.text
    edit = admin.request("PATCH", f"/admin-users/{uid}", json={"bio": "Back."})
    assert edit.status_code == 404, edit.text
    profile = profiles.get(uid)
    assert profile is not None
    assert (profile["approved"], profile.get("bio")) == (False, None)
    assert _decisions(uid) == []

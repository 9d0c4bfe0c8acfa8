"""Faults found reviewing the partial chargebacks and the account decisions against Auth.

- A chargeback's ledger id is made from PayPal's id of it: an id Firestore cannot take as a
  document id ('/' in it, too long) must still be booked, once.
- A 503 decision_unfinished says asking again finishes the change: a repeat must end the
  sessions that still hold the access the change took away.
- An account with no profile has no decision of the backend's: its claims (an admin's, in the
  console) are all there is, and the reconciliation must follow them when they narrow.
"""

from __future__ import annotations

from typing import Any

from shared.identity import access, sessions
from shared.payments import webhooks
from shared.platform import clients
from shared.platform.context import Role
from shared.workflows.payment_subjects import SUBJECTS
from tests.payment_support import assert_balanced, book_visit, ledger_of, pay, stored_order
from tests.paypal_support import Sim
from tests.support import bearer, create_user, problem, sign_in
from tests.test_access import _reconcile
from tests.test_approval_auth_faults import _admin_token, _doctor, _in_process


def _refund_shaped_reversal(capture_id: str, reversal_id: str, value: str) -> dict[str, Any]:
    """A PAYMENT.CAPTURE.REVERSED naming its amount, as PayPal sends a partial chargeback."""
    base = "https://api-m.sandbox.paypal.com/v2/payments"
    return {
        "id": "WH-review-" + reversal_id[:20].replace("/", "-"),
        "event_type": "PAYMENT.CAPTURE.REVERSED",
        "resource_type": "refund",
        "resource": {
            "id": reversal_id,
            "status": "COMPLETED",
            "amount": {"currency_code": "USD", "value": value},
            "links": [
                {"rel": "self", "href": f"{base}/refunds/{reversal_id}"},
                {"rel": "up", "href": f"{base}/captures/{capture_id}"},
            ],
        },
    }


def test_a_chargeback_id_unfit_for_a_document_id_is_booked_once(stack, sim: Sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    for reversal_id in ("RV/1", "__x__", "R" * 2000, "RV-1"):
        event = _refund_shaped_reversal(order["captureId"], reversal_id, "1.00")
        assert webhooks.apply(event, subjects=SUBJECTS) == webhooks.REVERSED_IN_PART
        # Delivered again: nothing more is booked.
        assert webhooks.apply(event, subjects=SUBJECTS) == webhooks.REVERSED_IN_PART

    stored = stored_order(order["id"])
    assert (stored["status"], stored["reversedMinor"]) == ("captured", 400)
    reversals = [t for t in ledger_of(order["id"]) if t["kind"] == "reversal"]
    assert len(reversals) == 4
    assert len({t["id"] for t in reversals}) == 4
    assert_balanced(ledger_of(order["id"]))


def test_a_refund_made_in_paypal_with_an_id_unfit_for_a_document_id_is_booked_once(
    stack, sim: Sim, admin
):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    event = _refund_shaped_reversal(order["captureId"], "RF/../2", "2.00")
    event["event_type"] = "PAYMENT.CAPTURE.REFUNDED"
    assert webhooks.apply(event, subjects=SUBJECTS) == "external_refund_completed"
    assert webhooks.apply(event, subjects=SUBJECTS) == "external_refund_completed"  # once

    stored = stored_order(order["id"])
    assert (stored["status"], stored["refundedMinor"]) == ("partially_refunded", 200)
    assert len([t for t in ledger_of(order["id"]) if t["kind"] == "refund"]) == 1
    assert_balanced(ledger_of(order["id"]))


def _store_down_once(patch: Any, name: str) -> None:
    """sessions.`name` fails as Firestore unreachable would, for the rest of `patch`."""
    from google.api_core.exceptions import ServiceUnavailable

    def failing(*args: Any, **kw: Any) -> int:
        raise ServiceUnavailable("injected: Firestore is unreachable")

    patch.setattr(sessions, name, failing)


def test_a_rejection_sent_again_after_decision_unfinished_ends_the_sessions(stack, monkeypatch):
    doctor = _doctor(stack, approved=True)
    browser = sign_in(stack, doctor)
    assert browser.get("/appointments").status_code == 200
    token = _admin_token(stack)
    reject = {"decision": "reject", "reason": "licence"}

    with monkeypatch.context() as patch:
        _store_down_once(patch, "revoke_all")
        answered = _in_process("POST", f"/{doctor.uid}/approval", token, reject)
    assert answered.status_code == 503, answered.get_data(as_text=True)
    assert answered.get_json()["code"] == "decision_unfinished"

    # The answer said: send the same change again to finish it.
    again = _in_process("POST", f"/{doctor.uid}/approval", token, reject)
    assert again.status_code == 200, again.get_data(as_text=True)
    problem(browser.get("/session"), 401, "session_revoked")


def test_a_role_change_sent_again_after_decision_unfinished_ends_the_sessions(stack, monkeypatch):
    user = _doctor(stack, approved=True)
    browser = sign_in(stack, user)
    token = _admin_token(stack)

    with monkeypatch.context() as patch:
        _store_down_once(patch, "revoke_all")
        answered = _in_process("PATCH", f"/{user.uid}", token, {"role": "patient"})
    assert answered.status_code == 503, answered.get_data(as_text=True)
    assert answered.get_json()["code"] == "decision_unfinished"

    again = _in_process("PATCH", f"/{user.uid}", token, {"role": "patient"})
    assert again.status_code == 200, again.get_data(as_text=True)
    problem(browser.get("/session"), 401, "session_revoked")


def test_claims_narrowed_in_the_console_of_an_account_without_profile_narrow_its_record(stack):
    from firebase_admin import auth

    user = create_user(stack, Role.DOCTOR, approved=True, profile=False)
    assert access.load(user.uid).approved is True  # its first request: the record from Auth

    # An admin withdraws the approval in the console: there is no decision of the backend's
    # to set the claims back to, so Auth's claims are the truth.
    auth.set_custom_user_claims(
        user.uid, {"role": "doctor", "approved": False}, app=clients.firebase_app()
    )
    assert user.uid in _reconcile(stack)["repaired"]
    assert access.get(user.uid).approved is False
    problem(bearer(stack, user).get("/appointments"), 403, "not_approved")

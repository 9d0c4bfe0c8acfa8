"""The `payouts` function: doctors and clinics paid what they earned, through PayPal Payouts.

Routes (under /payouts):
  GET  /                         a provider's payouts; everyone's (admin), newest first
  GET  /{payoutId}               one payout and its statement (its provider, admins)
  GET  /address                  the caller's payout address and whether payouts wait
  PUT  /address                  a provider asks to be paid at an address: a code goes to it
  POST /address/verify           ... and confirms it with that code (then a cooling-off)
  GET  /providers/{uid}          admin: a provider's payout profile
  POST /providers/{uid}/hold     admin: hold every payout of a provider (and /release)
  POST /{payoutId}/hold          admin: keep a scheduled payout from being sent (/release)
  POST /{payoutId}/retry         admin: send a payout PayPal refused once more
  POST /{payoutId}/cancel        admin: give up a held or refused payout; its money stays owed
  POST /run                      Cloud Scheduler (weekly) or an admin: this week's payouts
  POST /sweep                    Cloud Scheduler or an admin: ask PayPal about open payouts
  POST /check                    Cloud Scheduler (daily) or an admin: money in transit
  POST /tasks/send               Cloud Tasks only: the worker that sends one payout
  POST /webhook                  PayPal (no user): PAYMENT.PAYOUTS* events, verified first

See shared/payouts/ for how each works.
"""

from __future__ import annotations

from typing import Any

import flask
import functions_framework
from pydantic import Field

from shared.payments.webhook_envelope import PayPalEvent, Receipt
from shared.payouts import addresses, records
from shared.payouts.rules import RecipientType, Status
from shared.payouts.views import PayoutView, ProfileView
from shared.platform import clock, stored
from shared.platform.context import Role
from shared.platform.errors import Forbidden, NotFound
from shared.platform.fields import DocId
from shared.platform.models import Body, Page, SweepQuery, View
from shared.web.http import Call, Function

api = Function(
    "payouts",
    title="Alo Doktor payouts",
    description="Doctors and clinics paid through PayPal Payouts: payout addresses, payouts "
    "and their statements, the weekly run and its Cloud Tasks worker, reconciliation.",
)


def _provider(call: Call) -> tuple[str, str]:
    """(kind, uid) of the calling doctor or clinic."""
    p = call.principal
    if p.role not in (Role.DOCTOR, Role.CLINIC):
        raise Forbidden("Only doctors and clinics are paid out.", code="role_not_allowed")
    return p.role.value, p.uid


# -- payouts -------------------------------------------------------------------------------


class PayoutsQuery(Page):
    status: Status | None = None
    provider_uid: DocId | None = Field(default=None, description="admins only")


class PayoutList(View):
    items: list[PayoutView]
    next_cursor: str | None


@api.route("GET", "/", query=PayoutsQuery, response=PayoutList)
def list_payouts(call: Call) -> PayoutList:
    """Payouts newest first: a provider's own; any provider's (or all) for admins."""
    q: PayoutsQuery = call.query
    p = call.principal
    if q.provider_uid is not None and p.role is not Role.ADMIN:
        raise Forbidden("Only admins filter by providerUid.", code="filter_not_allowed")
    provider = q.provider_uid if p.role is Role.ADMIN else p.uid
    items, cursor = records.list_payouts(
        provider_uid=provider,
        status=q.status.value if q.status else None,
        limit=q.limit,
        cursor=q.cursor,
    )
    return PayoutList(items=stored.readable(PayoutView.of, items), next_cursor=cursor)


@api.route("GET", "/<payout_id>", response=PayoutView, problems=(404,))
def get_payout(call: Call) -> PayoutView:
    """One payout with its statement: the orders it paid and the provider's part of each."""
    return PayoutView.of(call.authorize(records.get(call.params["payout_id"])))


# -- the payout address ----------------------------------------------------------------------


class AddressBody(Body):
    recipient_type: RecipientType = Field(description="EMAIL or PAYPAL_ID")
    receiver: str = Field(min_length=3, max_length=127, description="the e-mail or PayPal id")


class VerifyBody(Body):
    code: str = Field(pattern=r"^[0-9]{6}$", description="the 6-digit code sent to confirm")


@api.route("GET", "/address", response=ProfileView)
def get_address(call: Call) -> ProfileView:
    """Where the caller's payouts go, and whether they wait (and why)."""
    _, uid = _provider(call)
    return ProfileView.of(uid, records.profile(uid), clock.now())


@api.route("PUT", "/address", body=AddressBody, response=ProfileView, problems=(409,))
def set_address(call: Call) -> ProfileView:
    """Ask to be paid at this address: a code is sent to it (for a PayPal id, to the account's
    e-mail). Until it is confirmed, payouts keep going where they went."""
    body: AddressBody = call.body
    kind, uid = _provider(call)
    profile = addresses.set_address(
        uid, kind, call.principal.email, body.recipient_type, body.receiver
    )
    return ProfileView.of(uid, profile, clock.now())


@api.route("POST", "/address/verify", body=VerifyBody, response=ProfileView, problems=(409,))
def verify_address(call: Call) -> ProfileView:
    """Confirm the new address with its code: payouts go there after a cooling-off, and the
    account's e-mail is told of the change."""
    _, uid = _provider(call)
    profile = addresses.verify(uid, call.body.code)
    return ProfileView.of(uid, profile, clock.now())


class Reason(Body):
    reason: str = Field(min_length=3, max_length=255)


def _provider_kind(uid: str) -> str:
    from shared.identity import profiles

    profile = profiles.get(uid)
    role = (profile or {}).get("role")
    if role not in (Role.DOCTOR.value, Role.CLINIC.value):
        raise NotFound("No such doctor or clinic.", code="provider_not_found")
    return str(role)


@api.route("GET", "/providers/<uid>", response=ProfileView, problems=(404,))
def provider_profile(call: Call) -> ProfileView:
    """A provider's payout profile (admins)."""
    uid = call.params["uid"]
    _provider_kind(uid)
    return ProfileView.of(uid, records.profile(uid), clock.now())


@api.route("POST", "/providers/<uid>/hold", body=Reason, response=ProfileView, problems=(404,))
def hold_provider(call: Call) -> ProfileView:
    """Hold every payout of this provider until released (admins)."""
    uid = call.params["uid"]
    profile = addresses.hold_provider(uid, _provider_kind(uid), call.body.reason, held=True)
    return ProfileView.of(uid, profile, clock.now())


@api.route("POST", "/providers/<uid>/release", response=ProfileView, problems=(404,))
def release_provider(call: Call) -> ProfileView:
    """Let this provider's payouts go out again (admins)."""
    uid = call.params["uid"]
    profile = addresses.hold_provider(uid, _provider_kind(uid), "", held=False)
    return ProfileView.of(uid, profile, clock.now())


# -- admins' actions on one payout ---------------------------------------------------------------


@api.route("POST", "/<payout_id>/hold", body=Reason, response=PayoutView, problems=(404, 409))
def hold(call: Call) -> PayoutView:
    """Keep a scheduled payout from being sent until released."""
    from shared.payouts import reconciling

    return PayoutView.of(reconciling.hold(call.params["payout_id"], call.body.reason))


@api.route("POST", "/<payout_id>/release", response=PayoutView, problems=(404, 409))
def release(call: Call) -> PayoutView:
    """Send a held payout after all."""
    from shared.payouts import reconciling

    return PayoutView.of(reconciling.release(call.params["payout_id"]))


@api.route("POST", "/<payout_id>/retry", response=PayoutView, problems=(404, 409))
def retry(call: Call) -> PayoutView:
    """Send a payout PayPal refused once more (say, once PayPal's balance was topped up)."""
    from shared.payouts import reconciling

    return PayoutView.of(reconciling.retry(call.params["payout_id"]))


@api.route("POST", "/<payout_id>/cancel", body=Reason, response=PayoutView, problems=(404, 409))
def cancel(call: Call) -> PayoutView:
    """Give up a payout PayPal does not have: the money is owed again, for a later payout."""
    from shared.payouts import reconciling

    return PayoutView.of(reconciling.cancel(call.params["payout_id"], call.body.reason))


# -- scheduled runs ------------------------------------------------------------------------------


class RunView(View):
    period: str
    accounts: int = Field(description="provider accounts and currencies looked at")
    recorded: int = Field(description="payouts recorded now")
    found: int = Field(description="payouts of this period recorded before")
    enqueued: int = Field(description="tasks made now")
    enqueue_failed: int = Field(description="payouts the next run will enqueue")
    skipped: dict[str, int] = Field(description="providers not paid this time, by reason")


@api.route("POST", "/run", response=RunView, problems=(503,))
def run(call: Call) -> RunView:
    """Record this week's payouts (money set aside in the ledger) and enqueue one named task
    each. Running it again, or twice at once, makes nothing twice."""
    from shared.payouts import scheduling
    from shared.workflows.payout_deliveries import DELIVERIES

    result = scheduling.run(deliveries=DELIVERIES)
    return RunView(
        period=result.period,
        accounts=result.accounts,
        recorded=result.recorded,
        found=result.found,
        enqueued=result.enqueued,
        enqueue_failed=result.enqueue_failed,
        skipped=result.skipped,
    )


class SweepView(View):
    asked: int = Field(description="payouts PayPal was asked about")
    changed: int
    cancelled: int = Field(description="items unclaimed too long, cancelled")
    redispatched: int = Field(description="payouts whose task gave up, enqueued anew")
    failed: int
    more: bool = Field(description="the batch was full: call again")


@api.route("POST", "/sweep", query=SweepQuery, response=SweepView)
def sweep(call: Call) -> SweepView:
    """Reconcile payouts with PayPal (a missed webhook, a reversal PayPal sends none for)."""
    from shared.payouts import reconciling

    return SweepView.model_validate(reconciling.sweep(limit=call.query.limit))


class Mismatch(View):
    currency: str
    in_transit: str = Field(description="what the ledger holds in payouts_in_transit")
    open_payouts: str = Field(description="what the open payouts add up to")


class CheckView(View):
    currencies: list[str]
    mismatches: list[Mismatch] = Field(description="empty when the books agree")


@api.route("POST", "/check", response=CheckView, problems=(503,))
def check(call: Call) -> CheckView:
    """Money in transit equals the open payouts, per currency; admins are told if not."""
    from shared.payouts import reconciling

    return CheckView.model_validate(reconciling.check_transit())


# -- Cloud Tasks and PayPal ----------------------------------------------------------------------


class SendTask(Body):
    payout_id: DocId


@api.route("POST", "/tasks/send", body=SendTask, response=PayoutView, problems=(404, 503))
def send(call: Call) -> PayoutView:
    """Send one payout to PayPal (the Cloud Task's target). 2xx once it needs nothing more
    (sent, refused, held); 503 only for what is worth retrying (PayPal down, a delivery of
    the same task sending it right now)."""
    from shared.payouts import sending

    return PayoutView.of(sending.send(call.body.payout_id))


@api.route("POST", "/webhook", body=PayPalEvent, response=Receipt, problems=(400, 503))
def webhook(call: Call) -> Receipt:
    """Verify, deduplicate and apply one PAYMENT.PAYOUTSBATCH.* or PAYMENT.PAYOUTS-ITEM.*
    event."""
    from shared.payouts import reconciling

    # As PayPal sent it, unknown fields too: that is what its signature covers.
    event: dict[str, Any] = call.sent
    headers = dict(call.request.headers.items())
    return Receipt.model_validate(reconciling.receive(headers, event))


@functions_framework.http
def payouts(request: flask.Request) -> flask.Response:
    return api.handle(request)

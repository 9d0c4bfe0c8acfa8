"""The `payments` function: orders, the ledger, balances and refunds.

Routes (under /payments):
  GET  /orders              a patient's payments; a doctor's or clinic's paid orders; all (admin)
  GET  /orders/{orderId}    its patient, its provider or an admin; with its refunds
  GET  /ledger              a doctor's or clinic's earnings entries; any account's (admin)
  GET  /balance             what the platform owes the doctor or clinic; any account's (admin)
  POST /refunds             admin: refund all or part of a capture, with a reason
  POST /refunds/sweep       admin (later Cloud Scheduler): send refunds PayPal was down for

Lists are newest first, `limit` + `cursor`.
"""

from __future__ import annotations

import flask
import functions_framework
from pydantic import Field, model_validator

from shared.identity.profile_fields import Price
from shared.payments import ledger, ledger_store, refunds
from shared.payments import records as order_records
from shared.payments.rules import OrderStatus
from shared.payments.views import EntryView, OrderView, RefundView, money_view
from shared.platform import idempotency, stored
from shared.platform.context import Role
from shared.platform.errors import BadRequest, Forbidden
from shared.platform.fields import Currency, DocId
from shared.platform.models import Body, Page, SweepQuery, View
from shared.web.http import Call, Function, Reply

api = Function(
    "payments",
    title="Alo Doktor payments",
    description="Orders, the double-entry ledger, provider balances and refunds.",
)

ACCOUNT_PATTERN = r"^[a-z_]+(:[a-z]+)?(:[A-Za-z0-9_-]{1,128})?$"


def own_account(call: Call) -> str:
    """The ledger account a doctor or clinic sees as theirs."""
    p = call.principal
    return ledger.earnings_account(p.role.value, p.uid)


def _admin_only(call: Call, name: str, value: object) -> None:
    if value is not None and call.principal.role is not Role.ADMIN:
        raise Forbidden(f"Only admins filter by {name}.", code="filter_not_allowed")


# -- orders ------------------------------------------------------------------------------


class OrdersQuery(Page):
    status: OrderStatus | None = None
    patient_uid: DocId | None = Field(default=None, description="admins only")
    provider_uid: DocId | None = Field(default=None, description="admins only")


class OrderList(View):
    items: list[OrderView]
    next_cursor: str | None


@api.route("GET", "/orders", query=OrdersQuery, response=OrderList)
def list_orders(call: Call) -> OrderList:
    """Payments the caller is party to (a patient's own; a provider's; all for admins)."""
    q: OrdersQuery = call.query
    p = call.principal
    _admin_only(call, "patientUid", q.patient_uid)
    _admin_only(call, "providerUid", q.provider_uid)
    patient_uid, provider_uid = q.patient_uid, q.provider_uid
    if p.role is Role.PATIENT:
        patient_uid = p.uid
    elif p.role in (Role.DOCTOR, Role.CLINIC):
        provider_uid = p.uid
    items, cursor = order_records.list_orders(
        patient_uid=patient_uid,
        provider_uid=provider_uid,
        status=q.status,
        limit=q.limit,
        cursor=q.cursor,
    )
    return OrderList(items=stored.readable(OrderView.of, items), next_cursor=cursor)


@api.route("GET", "/orders/<order_id>", response=OrderView, problems=(404,))
def get_order(call: Call) -> OrderView:
    """One order with its refunds."""
    order = call.authorize(order_records.get(call.params["order_id"]))
    return OrderView.of(order, refunds.for_order(order["id"]))


# -- the ledger --------------------------------------------------------------------------


class LedgerQuery(Page):
    account: str | None = Field(
        default=None, pattern=ACCOUNT_PATTERN, max_length=200, description="admins only"
    )
    order_id: DocId | None = Field(default=None, description="admins only")


class EntryList(View):
    items: list[EntryView]
    next_cursor: str | None


@api.route("GET", "/ledger", query=LedgerQuery, response=EntryList)
def list_entries(call: Call) -> EntryList:
    """Ledger entries, newest first: a provider's earnings; any account's for admins."""
    q: LedgerQuery = call.query
    _admin_only(call, "account", q.account)
    _admin_only(call, "orderId", q.order_id)
    account = q.account if call.principal.role is Role.ADMIN else own_account(call)
    items, cursor = ledger_store.entries(
        account, limit=q.limit, cursor=q.cursor, order_id=q.order_id
    )
    return EntryList(items=stored.readable(EntryView.of, items), next_cursor=cursor)


class BalanceQuery(Body):
    account: str | None = Field(
        default=None, pattern=ACCOUNT_PATTERN, max_length=200, description="admins only"
    )
    currency: Currency | None = None


class Balance(View):
    currency: str
    balance: dict[str, str] = Field(description="the sum of entries: debit positive")
    owed: dict[str, str] = Field(description="for earnings: what the platform owes (credit)")


class Balances(View):
    account: str
    balances: list[Balance]


@api.route("GET", "/balance", query=BalanceQuery, response=Balances)
def balance(call: Call) -> Balances:
    """A doctor's or clinic's balance: the sum of their earnings' entries, per currency."""
    q: BalanceQuery = call.query
    _admin_only(call, "account", q.account)
    if call.principal.role is Role.ADMIN and q.account is None:
        raise BadRequest("Name the account.", code="account_required")
    account = q.account or own_account(call)
    if q.currency is not None:
        sums = {q.currency: ledger_store.balance(account, q.currency)}
    else:
        sums = ledger_store.balances(account)
    return Balances(
        account=account,
        balances=[
            Balance(
                currency=c,
                balance=money_view(c, total),
                owed=money_view(c, -total),
            )
            for c, total in sorted(sums.items())
        ],
    )


# -- refunds -----------------------------------------------------------------------------


class RefundBody(Body):
    order_id: DocId
    amount: Price | None = Field(default=None, description="omit to refund all that is left")
    reason: str = Field(min_length=3, max_length=255)

    @model_validator(mode="after")
    def _positive(self) -> RefundBody:
        if self.amount is not None and self.amount.money().amount_minor <= 0:
            raise ValueError("amount: a refund is more than zero")
        return self


@api.route(
    "POST",
    "/refunds",
    body=RefundBody,
    response=RefundView,
    status=201,
    also=(200,),  # a replay of the same Idempotency-Key
    problems=(404, 409, 503),
    headers=(idempotency.HEADER,),
)
def refund(call: Call) -> Reply:
    """Refund all or part of a captured order (admins), with a reason the patient sees."""
    body: RefundBody = call.body
    key = call.idempotency_key("payments.refund")
    from shared.payments import refund_sending  # loads the PayPal client: only when used

    made, replayed = refund_sending.request(
        body.order_id,
        amount=body.amount.money() if body.amount else None,
        reason=body.reason,
        admin=call.principal,
        key=key,
    )
    return Reply(RefundView.of(made), status=200 if replayed else 201)


class SweepResult(View):
    done: int = Field(description="refunds sent, failed or found empty")
    waiting: int = Field(description="refunds still waiting for PayPal")
    more: bool = Field(description="the batch was full: call again")


@api.route("POST", "/refunds/sweep", query=SweepQuery, response=SweepResult)
def sweep(call: Call) -> SweepResult:
    """Send the refunds that PayPal was unavailable for."""
    from shared.payments import refund_sending

    done, waiting, more = refund_sending.sweep(limit=call.query.limit)
    return SweepResult(done=done, waiting=waiting, more=more)


@functions_framework.http
def payments(request: flask.Request) -> flask.Response:
    return api.handle(request)

"""What the payouts function answers: payouts with their statements, payout profiles, runs,
sweeps and checks. Money in PayPal's `{currency, value}` shape, never a float."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from shared.payments.views import money_view
from shared.payouts import rules
from shared.payouts.rules import Status
from shared.platform.models import View


class StatementLine(View):
    order_id: str
    amount: dict[str, str] = Field(description="the provider's part of the order paid out")


class PayoutError(View):
    name: str | None = None
    issue: str | None = None
    debug_id: str | None = None


class PayoutView(View):
    id: str
    period: str = Field(description="the ISO week it pays for, e.g. 2030-W07")
    provider_kind: str = Field(description="doctor or clinic")
    provider_uid: str
    status: Status
    hold_reason: str | None = Field(
        default=None, description="admin, no_address, cooling_off or held_by_admin"
    )
    amount: dict[str, str]
    lines: list[StatementLine] = Field(description="the statement: what it pays for")
    adjustment: dict[str, str] = Field(
        description="owed less than the lines add up to (a chargeback of earlier earnings)"
    )
    receiver: str | None = Field(default=None, description="where PayPal pays it, once sent")
    paypal_batch_id: str | None = None
    paypal_item_id: str | None = None
    item_status: str | None = Field(default=None, description="PayPal's transaction_status")
    error: PayoutError | None = Field(default=None, description="why PayPal refused it")
    created_at: datetime
    sent_at: datetime | None = None
    paid_at: datetime | None = None
    returned_at: datetime | None = None

    @classmethod
    def of(cls, doc: dict[str, Any]) -> PayoutView:
        currency = doc["currency"]
        error = doc.get("error")
        return cls(
            id=doc["id"],
            period=doc["period"],
            provider_kind=doc["providerKind"],
            provider_uid=doc["providerUid"],
            status=Status(doc["status"]),
            hold_reason=doc.get("holdReason"),
            amount=money_view(currency, doc["amountMinor"]),
            lines=[
                StatementLine(
                    order_id=line["orderId"], amount=money_view(currency, line["amountMinor"])
                )
                for line in doc.get("lines") or []
            ],
            adjustment=money_view(currency, int(doc.get("adjustmentMinor", 0))),
            receiver=doc.get("receiver"),
            paypal_batch_id=doc.get("paypalBatchId"),
            paypal_item_id=doc.get("paypalItemId"),
            item_status=doc.get("itemStatus"),
            error=PayoutError(
                name=error.get("name"), issue=error.get("issue"), debug_id=error.get("debugId")
            )
            if isinstance(error, dict)
            else None,
            created_at=doc["createdAt"],
            sent_at=doc.get("sentAt"),
            paid_at=doc.get("paidAt"),
            returned_at=doc.get("returnedAt"),
        )


class Address(View):
    recipient_type: rules.RecipientType
    receiver: str


class PendingAddress(Address):
    expires_at: datetime


class ProfileView(View):
    uid: str
    address: Address | None = Field(default=None, description="where payouts go, once verified")
    pending: PendingAddress | None = Field(
        default=None, description="a new address waiting for its code"
    )
    cooling_off_until: datetime | None = Field(
        default=None, description="payouts wait until then after an address change"
    )
    held_by_admin: bool = False
    blocked_by: rules.SendBlock | None = Field(
        default=None, description="why payouts wait now; none: they go out"
    )

    @classmethod
    def of(cls, uid: str, doc: dict[str, Any] | None, now: datetime) -> ProfileView:
        doc = doc or {}
        address, pending = doc.get("address"), doc.get("pending")
        return cls(
            uid=uid,
            address=Address(recipient_type=address["recipientType"], receiver=address["receiver"])
            if isinstance(address, dict)
            else None,
            pending=PendingAddress(
                recipient_type=pending["recipientType"],
                receiver=pending["receiver"],
                expires_at=pending["expiresAt"],
            )
            if isinstance(pending, dict)
            else None,
            cooling_off_until=doc.get("coolingOffUntil"),
            held_by_admin=bool(doc.get("heldByAdmin")),
            blocked_by=rules.send_block(doc or None, now),
        )

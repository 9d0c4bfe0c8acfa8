"""What the payment functions answer: orders, refunds and ledger entries, in PayPal's money
shape (`{currency, value}` decimal strings; never a float)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from shared.payments.rules import Kind, OrderStatus
from shared.platform.models import View
from shared.platform.money import Money


def money_view(currency: str, amount_minor: int) -> dict[str, str]:
    return {"currency": currency, "value": Money(currency, int(amount_minor)).value}


class RefundView(View):
    id: str
    order_id: str
    status: str = Field(description="pending, sending, completed, failed or skipped")
    amount: dict[str, str] | None = Field(description="None until fixed: all that is left")
    reason: str
    cause: str = Field(description="cancellation, unpayable, admin or paypal")
    error: str | None = None
    paypal_refund_id: str | None = None
    created_at: datetime
    completed_at: datetime | None = None

    @classmethod
    def of(cls, doc: dict[str, Any]) -> RefundView:
        amount = doc.get("amountMinor")
        return cls(
            id=doc["id"],
            order_id=doc["orderId"],
            status=doc["status"],
            amount=None if amount is None else money_view(doc["currency"], amount),
            reason=doc["reason"],
            cause=doc["cause"],
            error=doc.get("error"),
            paypal_refund_id=doc.get("paypalRefundId"),
            created_at=doc["createdAt"],
            completed_at=doc.get("completedAt"),
        )


class OrderView(View):
    id: str
    kind: Kind
    subject_id: str = Field(description="the appointment's or the booking's id")
    patient_uid: str
    provider_uid: str
    status: OrderStatus
    amount: dict[str, str]
    refunded: dict[str, str]
    charged_back: dict[str, str] = Field(
        description="taken back by chargebacks (PayPal reversed the payment); after one of part"
        " of it the order holds the rest"
    )
    paypal_order_id: str
    approve_link: str | None = Field(description="where the buyer approves, in PayPal's window")
    capture_id: str | None = None
    created_at: datetime
    captured_at: datetime | None = None
    refunds: list[RefundView] | None = Field(default=None, description="on single reads only")

    @classmethod
    def of(cls, doc: dict[str, Any], refunds: list[dict[str, Any]] | None = None) -> OrderView:
        currency = doc["currency"]
        return cls(
            id=doc["id"],
            kind=Kind(doc["kind"]),
            subject_id=doc["subjectId"],
            patient_uid=doc["patientUid"],
            provider_uid=doc["providerUid"],
            status=OrderStatus(doc["status"]),
            amount=money_view(currency, doc["amountMinor"]),
            refunded=money_view(currency, doc.get("refundedMinor", 0)),
            charged_back=money_view(currency, doc.get("reversedMinor", 0)),
            paypal_order_id=doc["paypalOrderId"],
            approve_link=doc.get("approveLink"),
            capture_id=doc.get("captureId"),
            created_at=doc["createdAt"],
            captured_at=doc.get("capturedAt"),
            refunds=None if refunds is None else [RefundView.of(r) for r in refunds],
        )


class EntryView(View):
    id: str
    tx_id: str
    kind: str = Field(description="payment, refund, reversal or payout")
    account: str
    amount: dict[str, str] = Field(description="debit positive, credit negative")
    order_id: str | None
    at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> EntryView:
        return cls(
            id=doc["id"],
            tx_id=doc["txId"],
            kind=doc["kind"],
            account=doc["account"],
            amount=money_view(doc["currency"], doc["amountMinor"]),
            order_id=doc.get("orderId"),
            at=doc["at"],
        )


class PaymentSummary(View):
    """How an appointment or booking was paid, as shown on it."""

    order_id: str
    status: str = Field(description="captured, partially_refunded, refunded or reversed")
    amount: dict[str, str]

    @classmethod
    def of(cls, payment: dict[str, Any] | None) -> PaymentSummary | None:
        if not payment:
            return None
        return cls(
            order_id=payment["orderId"],
            status=payment["status"],
            amount=money_view(payment["currency"], payment["amountMinor"]),
        )

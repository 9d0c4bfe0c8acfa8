"""PayPal's webhook event envelope and our receipt of it: the body and answer of both webhook
routes (`paypal-webhook` for orders, `payouts` for payouts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.platform.fields import DocId
from shared.platform.models import View


class PayPalEvent(BaseModel):
    """PayPal's event envelope: its own snake_case fields, and more than we read."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: DocId
    event_type: str = Field(min_length=1, max_length=128)
    resource: dict[str, Any]


class Receipt(View):
    event_id: str
    outcome: str
    replayed: bool

"""Helpers for tests of the PayPal client against the local simulator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from dev.stack import PAYPAL_SIM_CLIENT_ID, PAYPAL_SIM_CLIENT_SECRET, PAYPAL_SIM_WEBHOOK_ID
from shared.integrations.paypal import PayPal


@dataclass
class Sim:
    url: str
    contract: bool
    contract_reason: str

    def client(self, **kw: Any) -> PayPal:
        kw.setdefault("webhook_id", PAYPAL_SIM_WEBHOOK_ID)
        kw.setdefault("sleep", lambda seconds: None)  # retries need no real pause here
        return PayPal(self.url, PAYPAL_SIM_CLIENT_ID, PAYPAL_SIM_CLIENT_SECRET, **kw)

    def control(self, method: str, path: str, **kw: Any) -> Any:
        response = requests.request(method, self.url + "/_sim" + path, timeout=30, **kw)
        response.raise_for_status()
        return response.json()

    def fault(self, **spec: Any) -> None:
        self.control("POST", "/faults", json=spec)

    def approve(self, order: dict[str, Any]) -> None:
        """The buyer presses Approve in PayPal's window (the order's approve link)."""
        self.consent(order, "approve")

    def cancel(self, order: dict[str, Any]) -> None:
        """The buyer presses Cancel in PayPal's window."""
        self.consent(order, "cancel")

    def consent(self, order: dict[str, Any], action: str) -> requests.Response:
        """The approval page's form post; PayPal's redirect back to the merchant (its return
        or cancel URL) is answered, not followed."""
        from shared.integrations.paypal import approve_link

        link = approve_link(order)
        assert link is not None, order
        answer = requests.post(link, data={"action": action}, timeout=30, allow_redirects=False)
        answer.raise_for_status()
        return answer

    def requests_with(self, request_id: str) -> list[dict[str, Any]]:
        seen = self.control("GET", "/requests")["requests"]
        return [r for r in seen if r["requestId"] == request_id]


@pytest.fixture
def sim(stack: Any) -> Iterator[Sim]:
    """The stack's simulator; a test fails if PayPal's contract was broken during it."""
    health = requests.get(stack.paypal_url + "/_sim/health", timeout=30).json()
    s = Sim(stack.paypal_url, health["contract"], health["contractReason"])
    s.control("DELETE", "/faults")
    before = s.control("DELETE", "/violations")["violations"]
    assert before == [], f"contract violations left by an earlier test: {before}"
    yield s
    s.control("DELETE", "/faults")
    left = s.control("DELETE", "/violations")["violations"]
    assert left == [], f"PayPal contract violations: {left}"

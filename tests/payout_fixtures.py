"""Fixtures of the payout tests (`pytest_plugins = ("tests.payout_fixtures",)` in each)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.payout_support import Tasks
from tests.paypal_support import Sim


@pytest.fixture
def tasks(stack: Any) -> Iterator[Tasks]:
    t = Tasks(stack.tasks_url)
    t.control("DELETE", "/faults")
    yield t
    t.control("DELETE", "/faults")


@pytest.fixture
def payouts_sim(sim: Sim) -> Iterator[Sim]:
    """The simulator with PayPal's plain payout behaviour restored around the test."""
    sim.control("DELETE", "/payouts")
    yield sim
    sim.control("DELETE", "/payouts")

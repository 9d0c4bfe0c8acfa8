"""One local stack (Firestore and Auth emulators plus the gateway) per test run, on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from dev import query_indexes
from dev.stack import Ports, Stack
from shared.platform.context import Role
from tests.paypal_support import sim  # noqa: F401  (a fixture)
from tests.support import Api, bearer, create_user

# Property tests bound their work by example counts, never by time: a per-example deadline
# fails them on a busy machine for reasons that have nothing to do with the code.
settings.register_profile("alodoktor", deadline=None)
settings.load_profile("alodoktor")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `after_all` look at what the rest of the run did, so they go last."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


@pytest.fixture(scope="session")
def query_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("queries") / "queries.jsonl"


@pytest.fixture(scope="session")
def stack(query_log: Path) -> Iterator[Stack]:
    # PayPal's timeout is short here so that a test of a lost answer does not wait long.
    s = Stack(
        ports=Ports.free(),
        extra_env={query_indexes.ENV: str(query_log), "PAYPAL_TIMEOUT_SECONDS": "3"},
    )
    query_indexes.install(str(query_log))
    s.start()
    saved = dict(os.environ)
    os.environ.update(s.env)  # the tests' own Admin SDK calls go to the same emulators
    try:
        yield s
    finally:
        s.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def admin(stack: Stack) -> Api:
    """A signed-in admin (bearer token), new for each test."""
    return bearer(stack, create_user(stack, Role.ADMIN))

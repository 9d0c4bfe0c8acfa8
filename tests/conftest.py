"""One local stack (Firestore and Auth emulators plus the gateway) per test run, on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from dev import query_indexes
from dev.stack import Ports, Stack
from shared.platform import settings as platform_settings
from shared.platform.context import Role
from tests.paypal_support import sim  # noqa: F401  (a fixture)
from tests.support import Api, bearer, create_user

# Property tests bound their work by example counts, never by time: a per-example deadline
# fails them on a busy machine for reasons that have nothing to do with the code.
settings.register_profile("alodoktor", deadline=None)
settings.load_profile("alodoktor")


# Where every process of a run records its Firestore queries (one file each), so that a test
# after the whole run can read them all: `make pytest` sets it for its parallel run and the
# `after_all` run that follows. Unset, each run records into a directory of its own.
QUERY_DIR_ENV = "ALODOKTOR_QUERY_DIR"


# Files whose tests are each long and need nothing from one another (no module fixtures):
# parallel workers share them test by test. Every other file stays whole on one worker
# (`make pytest` runs `--dist loadgroup`), so its module fixtures are set up once.
SHARED_OUT = frozenset({"test_bundle.py", "test_hostile_input.py"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `after_all` look at what the rest of the run did, so they go last. Among
    parallel workers nothing runs last: there they are left to the run `make pytest` starts
    once the workers are done (every worker leaves them out alike, as xdist requires)."""
    for item in items:
        if item.path.name not in SHARED_OUT:
            item.add_marker(pytest.mark.xdist_group(item.path.name))
    after_all = [item for item in items if item.get_closest_marker("after_all") is not None]
    if after_all and _worker(config) is not None:
        config.hook.pytest_deselected(items=after_all)
        items[:] = [item for item in items if item not in after_all]
        return
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def _worker(config: pytest.Config) -> str | None:
    """This process's xdist worker id (gw0, gw1, ...), None when not a worker."""
    return getattr(config, "workerinput", {}).get("workerid")


@pytest.fixture(scope="session")
def query_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared = os.environ.get(QUERY_DIR_ENV)
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    return tmp_path_factory.mktemp("queries")


@pytest.fixture(scope="session")
def query_log(query_dir: Path, request: pytest.FixtureRequest) -> Path:
    """This process's own record of the queries its stack ran."""
    return query_dir / f"queries-{_worker(request.config) or 'main'}-{os.getpid()}.jsonl"


@pytest.fixture(scope="session")
def stack(query_log: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    # PayPal's timeout is short here so that a test of a lost answer does not wait long.
    s = Stack(
        ports=Ports.free(),
        extra_env={query_indexes.ENV: str(query_log), "PAYPAL_TIMEOUT_SECONDS": "3"},
        scheduler_paused=True,  # a test runs a job when it means to (tests/test_week.py lives)
    )
    query_indexes.install(str(query_log))
    s.start()
    saved = dict(os.environ)
    os.environ.update(s.env)  # the tests' own Admin SDK calls go to the same emulators
    # Settings are read once a process; a test before this one (an OpenAPI or docs build) may
    # have read them from the bare environment, without the stack's keys.
    platform_settings.get.cache_clear()
    try:
        yield s
    finally:
        # A run with failures keeps the stack's logs (emulators, gateway, relay) to read.
        failed = request.session.testsfailed > 0
        s.stop(keep_files=failed)
        if failed:
            print(f"\nthe local stack's logs are kept in {s.workdir}")
        os.environ.clear()
        os.environ.update(saved)
        platform_settings.get.cache_clear()


@pytest.fixture
def admin(stack: Stack) -> Api:
    """A signed-in admin (bearer token), new for each test."""
    return bearer(stack, create_user(stack, Role.ADMIN))

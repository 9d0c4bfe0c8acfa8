"""One local stack (Firestore and Auth emulators plus the gateway) per test run, on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dev.stack import Ports, Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s = Stack(ports=Ports.free())
    s.start()
    saved = dict(os.environ)
    os.environ.update(s.env)  # the tests' own Admin SDK calls go to the same emulators
    try:
        yield s
    finally:
        s.stop()
        os.environ.clear()
        os.environ.update(saved)

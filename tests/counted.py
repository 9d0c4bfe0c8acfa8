"""What one request of a function asks of Firestore and of the Firebase Auth API, counted.

The function is called in the tests' own process (its module loaded as functions-framework
loads it), against the stack's emulators, under bench/counting.py's counters: every gRPC call
of a Firestore client made while counting (the function gets a fresh one) and every `requests`
call (firebase-admin's Auth API calls among them). So a budget of Auth calls and document
operations is held by a test, not only reported by the bench.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import flask

from bench import counting
from shared.platform import clients
from tools.bundle import FUNCTIONS_DIR


def _function(name: str) -> ModuleType:
    """The function's module, loaded once and registered as functions-framework does (its
    pydantic models resolve their annotations through sys.modules)."""
    module_name = f"counted_{name.replace('-', '_')}"
    if module_name not in sys.modules:
        path = Path(FUNCTIONS_DIR) / name / "main.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@contextmanager
def counting_calls() -> Iterator[counting.Counters]:
    counters = counting.Counters()
    undo = counting.install(counters)
    saved = clients._db
    clients._db = None  # the function's client is made (and its channel counted) from now on
    try:
        yield counters
    finally:
        undo()
        clients._db = saved


def call(
    function: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> tuple[flask.Response, dict[str, int]]:
    """The function's answer to one request, and what it asked of Firestore and Auth:
    `firestore.reads`, `firestore.reads.<collection>`, `firestore.writes`, `http.auth`, ..."""
    api = _function(function).api
    with (
        counting_calls() as counters,
        flask.Flask(__name__).test_request_context(
            path, method=method, headers=headers or {}, json=json
        ),
    ):
        response = api.handle(flask.request)
    return response, counters.snapshot()


def operations(counts: dict[str, int]) -> int:
    """Document operations: documents read and written."""
    return counts.get("firestore.reads", 0) + counts.get("firestore.writes", 0)

"""Controls every contract-checked simulator shares (PayPal, Twilio, FCM): the contract
violations it recorded, listed for a test fixture that requires none, and handed over (then
forgotten) for a test that broke the contract on purpose."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

import flask


def add_violation_routes(
    app: flask.Flask, lock: AbstractContextManager[Any], violations: list[Any]
) -> None:
    """GET and DELETE /_sim/violations over `violations`, guarded by `lock`."""

    def reply(body: Any) -> flask.Response:
        return flask.Response(json.dumps(body), status=200, mimetype="application/json")

    @app.get("/_sim/violations")
    def violations_seen() -> flask.Response:
        with lock:
            return reply({"violations": list(violations)})

    @app.delete("/_sim/violations")
    def take_violations() -> flask.Response:
        with lock:
            taken = list(violations)
            violations.clear()
        return reply({"violations": taken})

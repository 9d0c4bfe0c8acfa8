"""Errors as RFC 9457 problem details, each with a stable machine-readable `code`."""

from __future__ import annotations

import json
import sys
from typing import Any

PROBLEM_TYPE_BASE = "https://alodoktor.com/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ApiError(Exception):
    status = 500
    code = "internal"
    title = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        if code:
            self.code = code
        self.headers = headers or {}
        self.extra = extra

    def body(self, *, instance: str, request_id: str) -> dict[str, Any]:
        problem: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "instance": instance,
            "requestId": request_id,
        }
        if self.detail:
            problem["detail"] = self.detail
        problem.update(self.extra)
        return problem


class BadRequest(ApiError):
    status, code, title = 400, "bad_request", "Bad request"


class ValidationFailed(BadRequest):
    code, title = "validation_failed", "The request is not valid"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        super().__init__(detail or "One or more fields are invalid.", errors=errors)


class Unauthenticated(ApiError):
    status, code, title = 401, "unauthenticated", "Authentication required"


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class UnreadableRecord(ApiError):
    """A stored record no longer parses (old data, a hand edit): that record answers 409 until
    it is rewritten; nobody else's request fails with it."""

    status, code, title = 409, "record_unreadable", "A stored record could not be read"


class DependencyUnavailable(ApiError):
    status, code, title = 503, "dependency_unavailable", "A service we depend on is unavailable"


def is_dependency_failure(exc: BaseException) -> bool:
    """True for network-level failures of Google APIs or HTTP peers.

    Checks only modules already imported: a failure of a library is only possible if it was
    loaded, and this keeps error handling from importing gRPC on a cold start.
    """
    classes: list[type[BaseException]] = []
    core = sys.modules.get("google.api_core.exceptions")
    if core is not None:
        classes += [
            core.ServiceUnavailable,
            core.DeadlineExceeded,
            core.RetryError,
            core.InternalServerError,
            core.GatewayTimeout,
            # gRPC UNKNOWN: the call failed and the server did not say why (a dropped
            # stream, an overloaded backend); ABORTED that reaches here is contention that
            # outlasted every retry; RESOURCE_EXHAUSTED a quota. Each is worth retrying.
            core.Unknown,
            core.Aborted,
            core.ResourceExhausted,
        ]
    fb = sys.modules.get("firebase_admin.exceptions")
    if fb is not None:
        classes += [
            fb.UnavailableError,
            fb.DeadlineExceededError,
            fb.InternalError,
            fb.UnknownError,
            fb.ResourceExhaustedError,
        ]
    rq = sys.modules.get("requests.exceptions")
    if rq is not None:
        classes += [rq.ConnectionError, rq.Timeout]
    transport = sys.modules.get("google.auth.exceptions")
    if transport is not None:
        classes.append(transport.TransportError)
    return isinstance(exc, tuple(classes))


def problem_json(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))

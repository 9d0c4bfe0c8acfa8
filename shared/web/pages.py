"""Pages: the one way a route answers HTML instead of JSON.

A few public routes are opened by people in a browser (the unsubscribe link in a mail). Such a
route is registered with `html=True` and returns an `Html` when `wanted(request)`: a browser
names text/html in its Accept header, while API clients (`application/json`, or `*/*` as curl
and requests send) keep getting JSON and problem+json. The OpenAPI document lists text/html
beside JSON for that route's success and its problems (shared/web/openapi.py).

Pages are rendered server-side and run no script: their CSP allows nothing to load, forms to
post only to the page's own origin, and no framing; the URL may carry a credential (a signed
token), so no referrer is sent on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flask

MEDIA_TYPE = "text/html"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class Html:
    """A page, as a route's answer; `status` is the route's own unless one of its problems
    (a page saying what went wrong)."""

    body: str
    status: int | None = None


def wanted(request: flask.Request) -> bool:
    """Whether the client asks for a page rather than JSON (only a browser's Accept does)."""
    return request.accept_mimetypes.best_match(["application/json", MEDIA_TYPE]) == MEDIA_TYPE


def language(request: flask.Request, offered: Sequence[str], default: str) -> str:
    """The first of `offered` the client's Accept-Language takes, for a page about no one."""
    accept = request.accept_languages
    for tag, _ in accept:
        base = tag.split("-")[0].lower()
        if base in offered:
            return base
    return default


def respond(page: Html, status: int, problems: Sequence[int] | None) -> flask.Response:
    """The response for a route's page; `problems` are the error statuses its document lists
    (None: the route does not answer pages at all)."""
    if problems is None or (page.status is not None and page.status not in problems):
        # The OpenAPI document promises these answers and no other.
        raise AssertionError(f"an undocumented page ({page.status or status})")
    response = flask.Response(page.body, status=page.status or status, mimetype=MEDIA_TYPE)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.vary.add("Accept")
    return response

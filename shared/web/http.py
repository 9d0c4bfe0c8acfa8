"""The request pipeline every HTTP function runs: one way to route, authenticate, authorize,
validate, answer and fail.

A function builds one `Function`, registers its routes with `@api.route(...)` (each must have
an entry in shared.web.policy), and hands requests to `api.handle` from its entry point.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import flask
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map
from werkzeug.routing import Rule as UrlRule

from shared.audit import service as audit
from shared.identity import auth
from shared.platform import context, disclosure, errors, idempotency, ids, logs, models, settings
from shared.platform.context import Caller, Principal, RequestContext, ServicePrincipal
from shared.web import forms, pages, policy

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
ALLOWED_REQUEST_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-CSRF-Token, X-Request-Id"
# On every answer, whichever URL it was called at: the hosting origin adds the same to the
# front end's files (firebase.json), but a function's own URL is reachable too.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Frame-Options": "DENY",
}
API_PAGE_POLICY = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

log = logs.get("alodoktor.http")


@dataclass
class Call:
    """One request as a handler sees it: validated input, the caller, and what to send back."""

    request: flask.Request
    ctx: RequestContext
    rule: policy.Rule
    params: dict[str, Any]
    body: Any = None
    # The body as sent, parsed (JSON, or a form's fields) but not validated: for a check over
    # exactly what the sender signed (Twilio signs every field it posts).
    sent: Any = None
    query: Any = None
    set_cookies: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        """The signed-in person; a route a service may call reads `caller` instead."""
        caller = self.caller
        if isinstance(caller, ServicePrincipal):
            raise errors.Forbidden("This route acts for a person only.", code="person_required")
        return caller

    @property
    def caller(self) -> Caller:
        if self.ctx.principal is None:  # only public routes run without one
            raise errors.Unauthenticated()
        return self.ctx.principal

    def authorize(self, resource: dict[str, Any] | None) -> dict[str, Any]:
        """Apply this route's ownership rule to a loaded resource (404 when not the caller's)."""
        policy.check_owner(self.rule, self.principal, resource)
        assert resource is not None
        return resource

    def idempotency_key(self, scope: str) -> idempotency.Key | None:
        """This create's `Idempotency-Key`, bound to the caller and to the validated body."""
        body = self.body.model_dump(mode="json") if isinstance(self.body, BaseModel) else None
        return idempotency.from_header(
            self.request.headers.get(idempotency.HEADER),
            scope=scope,
            caller=self.caller.uid,
            request=body,
        )

    @property
    def client_ip(self) -> str | None:
        # Google's front end appends the address it saw; earlier entries are client-supplied.
        forwarded = self.request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        return hops[-1] if hops else self.request.remote_addr

    @property
    def user_agent(self) -> str | None:
        ua = self.request.headers.get("User-Agent")
        return ua[:512] if ua else None


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    rule: policy.Rule
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    summary: str
    problems: tuple[int, ...]
    headers: tuple[str, ...] = ()  # optional request headers it reads, for the OpenAPI document
    # Other success statuses a `Reply` may give, with the same body (e.g. 200 for a replayed
    # create whose first answer was 201): documented too, and nothing else may be answered.
    also: tuple[int, ...] = ()
    # It also takes its body as an HTML form (callers that cannot send JSON: Twilio's
    # callbacks, RFC 8058's one-click POSTs), validated as the same model.
    form: bool = False
    # It answers a browser a page (an `Html`, shared/web/pages.py) for its success and its
    # problems, and JSON to everyone else.
    html: bool = False


@dataclass
class Reply:
    """A handler's answer when it is not a plain 200/route-status JSON body."""

    body: Any = None
    status: int | None = None


class Function:
    def __init__(self, name: str, *, title: str, description: str = "") -> None:
        self.name = name
        self.title = title
        self.description = description
        self.routes: dict[str, Route] = {}
        self._map = Map(strict_slashes=False, merge_slashes=False)
        self.route("GET", "/openapi.json", summary="This function's OpenAPI 3.1 document")(
            self._serve_openapi
        )
        if flask.has_app_context():  # being loaded by functions-framework's app factory
            app = flask.current_app
            # Its Flask app answers what its own router cannot match (a path with a control
            # character, /robots.txt) with an HTML page before `handle` runs: answer those
            # in the one error shape too.
            app.register_error_handler(HTTPException, self._router_error)
            # And it would merge `//` with a 308 redirect, so an empty id (`/appointments//cancel`)
            # would be followed to another route; an empty segment names nothing here (404).
            app.url_map = Map(merge_slashes=False, strict_slashes=app.url_map.strict_slashes)

    # -- registration -------------------------------------------------------------------

    def route(
        self,
        method: str,
        path: str,
        *,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        summary: str = "",
        problems: tuple[int, ...] = (),
        headers: tuple[str, ...] = (),
        also: tuple[int, ...] = (),
        form: bool = False,
        html: bool = False,
    ) -> Callable[[Handler], Handler]:
        rule = policy.rule_for(self.name, method, path)  # raises PolicyMissing

        def register(handler: Handler) -> Handler:
            endpoint = f"{method} {path}"
            if endpoint in self.routes:
                raise ValueError(f"{endpoint} registered twice in {self.name}")
            self.routes[endpoint] = Route(
                method,
                path,
                handler,
                rule,
                body,
                query,
                response,
                status,
                summary or (handler.__doc__ or "").strip().split("\n")[0],
                problems,
                headers,
                also,
                form,
                html,
            )
            self._map.add(UrlRule(path, endpoint=endpoint, methods=[method]))
            return handler

        return register

    def openapi(self) -> dict[str, Any]:
        from shared.web import openapi

        return openapi.document(self)

    def _serve_openapi(self, call: Call) -> Any:
        return self.openapi()

    # -- serving ------------------------------------------------------------------------

    def handle(self, request: flask.Request) -> flask.Response:
        started = time.perf_counter()
        ctx = _new_context(self.name, request)
        token = context.bind(ctx)
        try:
            try:
                response = self._dispatch(request, ctx)
            except errors.ApiError as exc:
                response = _problem(exc, request, ctx)
            except HTTPException as exc:  # werkzeug's own refusals (e.g. a client gone mid-body)
                response = _problem(_api_error_of(exc), request, ctx)
            except Exception as exc:
                if errors.is_dependency_failure(exc):
                    log.warning("dependency failure: %r", exc)
                    response = _problem(errors.DependencyUnavailable(), request, ctx)
                else:
                    log.exception("unhandled error in %s %s", request.method, request.path)
                    response = _problem(errors.ApiError(), request, ctx)
            self._decorate(response, request, ctx)
            _access_log(request, response, ctx, started)
            return response
        finally:
            context.unbind(token)

    def _router_error(self, exc: HTTPException) -> flask.Response:
        request = flask.request
        started = time.perf_counter()
        ctx = _new_context(self.name, request)
        response = _problem(_api_error_of(exc), request, ctx)
        self._decorate(response, request, ctx)
        _access_log(request, response, ctx, started)
        return response

    def _dispatch(self, request: flask.Request, ctx: RequestContext) -> flask.Response:
        s = settings.get()
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            return self._preflight(request, origin)
        if origin and origin not in s.allowed_origins and request.method not in SAFE_METHODS:
            raise errors.Forbidden("This origin may not call the API.", code="origin_not_allowed")
        raw = _read_body(request, s.max_body_bytes)

        raw_path = _raw_path(request)
        if _EMPTY_SEGMENT.search(raw_path) or _ENCODED_SLASH.search(raw_path):
            # An empty id (`/appointments//cancel`) or one holding a slash (`%2F`) would
            # otherwise reach another route once the slashes are read or merged.
            raise errors.NotFound("No such route.", code="route_not_found")
        route, params = self._match(request.method, self._route_path(request))
        if not all(ids.DOC_ID.fullmatch(str(v)) for v in params.values()):
            # Every path parameter is a document id; anything else names nothing here.
            raise errors.NotFound("No such resource.", code="not_found")
        if not route.rule.public:
            creds = auth.credentials(
                request.headers.get("Authorization"), request.cookies.get(auth.COOKIE_NAME)
            )
            if creds is not None:
                ctx.principal = auth.authenticate(creds, function=self.name)
        policy.check_access(route.rule, ctx.principal)
        if isinstance(ctx.principal, Principal) and ctx.principal.via_cookie:
            _check_csrf(request, ctx.principal)

        call = Call(request=request, ctx=ctx, rule=route.rule, params=params)
        if route.body is not None:
            parsed = (
                forms.fields(raw, request.mimetype, request.mimetype_params)
                if route.form and forms.takes(request.mimetype)
                else _json_body(request, raw, form=route.form)
            )
            call.sent = parsed
            call.body = models.parse(route.body, parsed)
        elif raw:
            raise errors.BadRequest("This route takes no body.", code="unexpected_body")
        if route.query is not None:
            call.query = models.parse(route.query, request.args.to_dict())
        elif request.args:
            raise errors.BadRequest(
                "This route takes no query parameters.", code="unexpected_query"
            )

        result = route.handler(call)
        status = route.status
        if isinstance(result, Reply):
            status = result.status or status
            result = result.body
            if status not in (route.status, *route.also):
                # The OpenAPI document promises these statuses and no other success.
                raise AssertionError(f"{route.method} {route.path} answered undocumented {status}")
        _log_disclosure(route, result)
        if isinstance(result, pages.Html):
            response = pages.respond(result, status, route.problems if route.html else None)
        else:
            response = _json_response(_dump(result), status)
        for cookie in call.set_cookies:
            response.set_cookie(**cookie)
        response.headers.update(call.headers)
        return response

    def _route_path(self, request: flask.Request) -> str:
        """The path within this function: the same with or without the `/api/<function>`
        prefix a same-origin rewrite (Firebase Hosting's) keeps when it forwards a request."""
        path = request.path
        prefix = f"/api/{self.name}"
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix) :] or "/"
        return path

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, Any]]:
        adapter = self._map.bind("function.invalid", path_info=path)
        try:
            endpoint, params = adapter.match(method=method)
        except WerkzeugMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            raise errors.MethodNotAllowed(headers={"Allow": allowed}) from None
        except WerkzeugNotFound:
            raise errors.NotFound("No such route.", code="route_not_found") from None
        return self.routes[endpoint], dict(params)

    def _preflight(self, request: flask.Request, origin: str | None) -> flask.Response:
        if not origin or origin not in settings.get().allowed_origins:
            raise errors.Forbidden("This origin may not call the API.", code="origin_not_allowed")
        path = self._route_path(request)
        methods = sorted({r.method for r in self.routes.values() if self._path_matches(r, path)})
        if not methods:
            raise errors.NotFound("No such route.", code="route_not_found")
        response = flask.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_REQUEST_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    def _path_matches(self, route: Route, path: str) -> bool:
        adapter = self._map.bind("function.invalid", path_info=path)
        try:
            adapter.match(method=route.method)
        except (WerkzeugNotFound, WerkzeugMethodNotAllowed):
            return False
        return True

    def _decorate(
        self, response: flask.Response, request: flask.Request, ctx: RequestContext
    ) -> None:
        response.headers["X-Request-Id"] = ctx.request_id
        response.headers.update(SECURITY_HEADERS)
        for name, value in API_PAGE_POLICY.items():  # a page (shared/web/pages.py) sets its own
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        if response.status_code in (204, 304):
            response.headers.remove("Content-Type")  # no body: not the default text/html
        origin = request.headers.get("Origin")
        if origin and origin in settings.get().allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id"
        response.vary.add("Origin")


_EMPTY_SEGMENT = re.compile(r"//")
_ENCODED_SLASH = re.compile(r"%2[fF]")


def _raw_path(request: flask.Request) -> str:
    """The path as the client sent it, before percent-decoding (gunicorn's RAW_URI, werkzeug's
    REQUEST_URI); the decoded path where neither is known."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    return str(raw).split("?", 1)[0]


def _new_context(function: str, request: flask.Request) -> RequestContext:
    supplied = request.headers.get("X-Request-Id", "")
    request_id = supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
    ctx = RequestContext(request_id=request_id, function=function)
    trace_header = request.headers.get("X-Cloud-Trace-Context", "")
    trace_id, _, rest = trace_header.partition("/")
    if not trace_id:
        parts = request.headers.get("traceparent", "").split("-")
        if len(parts) == 4:
            trace_id, rest = parts[1], parts[2]
    if re.fullmatch(r"[0-9a-fA-F]{32}", trace_id or ""):
        try:
            project = settings.get().project_id
        except RuntimeError:
            project = "unknown"
        ctx.trace = f"projects/{project}/traces/{trace_id}"
        ctx.span_id = rest.split(";")[0] or None
    return ctx


def _check_csrf(request: flask.Request, principal: Principal) -> None:
    if request.method in SAFE_METHODS:
        return
    supplied = request.headers.get(CSRF_HEADER, "")
    expected = principal.csrf_token or ""
    if not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise errors.Forbidden(
            f"Cookie-authenticated changes need the {CSRF_HEADER} header of this session.",
            code="csrf_token_invalid",
        )


def _read_body(request: flask.Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes before reading them all.

    (Setting request.max_content_length would make functions-framework's own after-request
    drain of the body raise, turning a 413 into a 500.)
    """
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge(f"Bodies are limited to {limit} bytes.")
    if request.content_length is not None:
        return request.get_data(cache=True)
    raw = request.stream.read(limit + 1)  # chunked: no declared length
    if len(raw) > limit:
        raise errors.PayloadTooLarge(f"Bodies are limited to {limit} bytes.")
    return raw


# No body of ours nests deeper than a few levels, and Firestore stores at most 20 levels of
# maps and arrays; refusing deeper JSON before parsing it keeps the parser's recursion (and
# every later walk of the value) bounded whatever a client sends.
MAX_JSON_DEPTH = 20
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects more than `limit` deep (brackets inside
    strings ignored). Linear in the body; most bodies have too few brackets to need the walk."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


def _json_body(request: flask.Request, raw: bytes, *, form: bool = False) -> Any:
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        also = "".join(f" or {media}" for media in forms.MEDIA_TYPES) if form else ""
        raise errors.UnsupportedMediaType(f"Send the body as application/json{also}.")
    if not raw:
        raise errors.BadRequest("This route needs a JSON body.", code="body_missing")
    if nests_deeper_than(raw, MAX_JSON_DEPTH):
        raise errors.BadRequest(
            f"The body nests deeper than {MAX_JSON_DEPTH} levels.", code="json_too_deep"
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise errors.BadRequest("The body is not valid JSON.", code="malformed_json") from None


def _log_disclosure(route: Route, result: Any) -> None:
    """Write the `read` entries of the health data this answer carries (the views' `Health`
    fields, shared.platform.disclosure), whatever the route and method, before any of it is
    sent: one write for all (a list's too). If they cannot be written the answer is withheld
    (503), so health data never leaves unlogged; a change the handler made stands."""
    resources = disclosure.disclosed(result)
    if not resources:
        return
    try:
        audit.record_reads(resources, f"{route.method} {route.path}")
    except Exception as exc:
        if errors.is_dependency_failure(exc):
            log.warning("health data withheld, its read entry not written: %r", exc)
        else:
            log.exception("health data withheld, its read entry not written")
        raise errors.DependencyUnavailable(
            "The answer holds health data and its access could not be logged, so it is "
            "withheld; read it again later.",
            code="audit_unavailable",
        ) from None


def _dump(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True)
    if isinstance(result, list):
        return [_dump(item) for item in result]
    return result


def _json_response(payload: Any, status: int) -> flask.Response:
    if status == 204 or payload is None:
        return flask.Response(status=204 if payload is None else status)
    return flask.Response(
        json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json"
    )


def _api_error_of(exc: HTTPException) -> errors.ApiError:
    """A werkzeug/Flask HTTP error as ours: the same status, a problem+json body."""
    status = exc.code or 500
    if status == 404:
        return errors.NotFound("No such route.", code="route_not_found")
    if status == 405:
        return errors.MethodNotAllowed()
    if status == 413:
        return errors.PayloadTooLarge("The request body is too large.")
    if 400 <= status < 500:
        error = errors.BadRequest("The request could not be read.", code="bad_request")
        error.status = status
        return error
    return errors.ApiError()


def _problem(exc: errors.ApiError, request: flask.Request, ctx: RequestContext) -> flask.Response:
    body = exc.body(instance=request.script_root + request.path, request_id=ctx.request_id)
    response = flask.Response(
        errors.problem_json(body), status=exc.status, mimetype=errors.PROBLEM_MEDIA_TYPE
    )
    response.headers.update(exc.headers)
    return response


def _access_log(
    request: flask.Request, response: flask.Response, ctx: RequestContext, started: float
) -> None:
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "fields": {
                "httpRequest": {
                    "requestMethod": request.method,
                    "requestUrl": request.path,
                    "status": response.status_code,
                    "latency": f"{time.perf_counter() - started:.6f}s",
                    "userAgent": request.headers.get("User-Agent", "")[:256],
                    "remoteIp": request.remote_addr,
                }
            }
        },
    )

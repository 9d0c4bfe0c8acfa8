"""One local process serving every function under /<function-name>, as deployed.

Each function is loaded with functions-framework's own app factory from its folder, exactly as
the Cloud Functions runtime loads it, and mounted at its name. The gateway adds a merged
OpenAPI document at /openapi.json and a docs page at /docs.

The merged document keeps each function's component schemas apart: every function names its
schemas on its own (two functions each have a `Status`, of different values), so in the merged
document each is renamed `<Function>_<Name>` (`Appointments_Status`, `AdminUsers_Problem`) and
every `$ref` of that function's paths and schemas is rewritten to match. That form, rather than
`appointments.Status` or `admin-users__Status`, is a valid identifier in every language a client
generator writes (a `.` reads as a package separator to some, a `-` is no identifier at all),
and still matches OpenAPI's `^[a-zA-Z0-9._-]+$` for component names. Each function's own document
keeps its plain names: it is valid and complete on its own, and only the merge can collide.
Security schemes are shared when identical, and namespaced the same way when not.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import os
import re
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flask
import functions_framework
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import WSGIRequestHandler, make_server, run_simple

from shared.platform import errors
from shared.web import policy
from tools.bundle import FUNCTIONS_DIR, function_names, target_of

SCHEMA_REF = "#/components/schemas/"


def build() -> tuple[Any, dict[str, flask.Flask]]:
    apps = {
        name: functions_framework.create_app(  # type: ignore[no-untyped-call]
            target=target_of(name), source=str(FUNCTIONS_DIR / name / "main.py")
        )
        for name in function_names()
    }
    root = flask.Flask("gateway")

    merged_doc: dict[str, Any] = {}

    def merged() -> dict[str, Any]:
        # The documents are fixed once the functions are loaded: merge them once.
        if not merged_doc:
            merged_doc.update(merged_document(apps))
        return merged_doc

    @root.errorhandler(HTTPException)
    def problem(exc: HTTPException) -> flask.Response:
        # A path outside every function (a typo, a control character) is answered in the one
        # error shape, as each function answers its own.
        status = exc.code or 500
        error = (
            errors.NotFound("No function serves this path.", code="route_not_found")
            if status == 404
            else errors.MethodNotAllowed()
            if status == 405
            else errors.ApiError()
        )
        body = error.body(instance=flask.request.path, request_id=uuid.uuid4().hex)
        return flask.Response(
            errors.problem_json(body), status=error.status, mimetype=errors.PROBLEM_MEDIA_TYPE
        )

    @root.get("/healthz")
    def healthz() -> Any:
        return {"ok": True, "functions": sorted(apps)}

    @root.get("/")
    def index() -> Any:
        return {
            "functions": {n: f"/{n}" for n in apps},
            "openapi": "/openapi.json",
            "docs": "/docs",
        }

    @root.get("/openapi.json")
    def openapi() -> Any:
        return merged()

    @root.get("/docs")
    def docs() -> Any:
        rows = []
        for path, ops in merged()["paths"].items():
            for method, op in ops.items():
                rows.append(
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>".format(
                        method.upper(),
                        html.escape(path),
                        html.escape(op.get("summary", "")),
                        html.escape(", ".join(op.get("x-roles", []))),
                    )
                )
        page = (
            "<!doctype html><meta charset=utf-8><title>Alo Doktor API</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em .8em}</style>"
            "<h1>Alo Doktor API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a>"
            "</p><table><tr><th>Method</th><th>Path</th><th>Summary</th><th>Roles</th></tr>"
            + "".join(rows)
            + "</table>"
        )
        return flask.Response(page, mimetype="text/html")

    mounts = {f"/{n}": _as_deployed(a) for n, a in apps.items()}
    mounts.update({f"{HOSTING_PREFIX}/{n}": _as_rewritten(a) for n, a in apps.items()})
    return DispatcherMiddleware(root.wsgi_app, mounts), apps


def merged_document(apps: Mapping[str, flask.Flask]) -> dict[str, Any]:
    """The merged OpenAPI document of every HTTP function, as /openapi.json serves it."""
    return merge({n: _document_of(n, apps[n]) for n in policy.FUNCTIONS})


def _document_of(name: str, app: flask.Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    if response.status_code != 200:
        raise RuntimeError(f"{name} answered {response.status_code} for its /openapi.json")
    document: dict[str, Any] = response.get_json()
    return document


def namespace(function: str) -> str:
    """The prefix of a function's names in the merged document: `admin-users` -> `AdminUsers`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]+", function))


def merge(parts: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One OpenAPI 3.1 document of every function's, each function's schemas under its own
    names (`<Function>_<Name>`), so that no two functions' same-named schemas meet."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Alo Doktor backend", "version": "1.0.0"},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    }
    schemas: dict[str, Any] = doc["components"]["schemas"]
    schemes: dict[str, Any] = doc["components"]["securitySchemes"]
    prefixes: dict[str, str] = {}
    for function in sorted(parts):
        part = parts[function]
        prefix = namespace(function)
        if prefix in prefixes:
            raise ValueError(f"{function} and {prefixes[prefix]} would share the names {prefix}_*")
        prefixes[prefix] = function
        components = part.get("components", {})
        unknown = set(components) - {"schemas", "securitySchemes"}
        if unknown:
            raise ValueError(f"{function}: components {sorted(unknown)} are not merged")
        renamed = {name: f"{prefix}_{name}" for name in components.get("schemas", {})}
        scheme_names: dict[str, str] = {}
        for name, scheme in components.get("securitySchemes", {}).items():
            if schemes.get(name, scheme) == scheme:
                scheme_names[name] = name
            else:  # the same name for another scheme: this function's keeps apart too
                scheme_names[name] = f"{prefix}_{name}"
            schemes[scheme_names[name]] = scheme
        for name, schema in components.get("schemas", {}).items():
            schemas[renamed[name]] = _rewrite_refs(schema, renamed, function)
        for path, item in part.get("paths", {}).items():
            if path in doc["paths"]:
                raise ValueError(f"{function}: {path} is also another function's path")
            item = _rewrite_refs(item, renamed, function)
            for op in item.values():
                for requirement in op.get("security", []) if isinstance(op, dict) else []:
                    for name in list(requirement):
                        if name not in scheme_names:
                            raise ValueError(f"{function}: {path} needs an undeclared {name}")
                        requirement[scheme_names[name]] = requirement.pop(name)
            doc["paths"][path] = item
    return doc


def _rewrite_refs(node: Any, renamed: Mapping[str, str], function: str) -> Any:
    """A copy of `node` whose `$ref`s name the renamed schemas; any other `$ref` is an error."""
    node = copy.deepcopy(node)
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                name = ref.removeprefix(SCHEMA_REF)
                if not ref.startswith(SCHEMA_REF) or name not in renamed:
                    raise ValueError(f"{function}: $ref {ref!r} names none of its schemas")
                item["$ref"] = SCHEMA_REF + renamed[name]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return node


def _as_deployed(app: Any) -> Any:
    """Give a function `/` for a request to its bare URL, as Cloud Functions does."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("PATH_INFO"):
            environ["PATH_INFO"] = "/"
        return app(environ, start_response)

    return wsgi


HOSTING_PREFIX = "/api"
HOSTING_COOKIE = "__session"


def _as_rewritten(app: Any) -> Any:
    """A function behind Firebase Hosting's rewrite of `/api/<function>/**`: it receives the
    whole path, prefix included, and of the cookies only `__session` (Hosting drops the rest)."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        environ["PATH_INFO"] = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        environ["SCRIPT_NAME"] = ""
        cookies = [
            c.strip()
            for c in environ.get("HTTP_COOKIE", "").split(";")
            if c.strip().startswith(HOSTING_COOKIE + "=")
        ]
        if cookies:
            environ["HTTP_COOKIE"] = "; ".join(cookies)
        else:
            environ.pop("HTTP_COOKIE", None)
        return app(environ, start_response)

    return wsgi


ROOT = Path(__file__).resolve().parent.parent
FIREBASE_JSON = ROOT / "firebase.json"
# Firebase Hosting's reserved URL of the project's web configuration (the JS SDK's settings).
FIREBASE_INIT = "/__/firebase/init.json"


def hosting_rewrites(config: Mapping[str, Any]) -> list[str]:
    """The functions firebase.json's Hosting rewrites forward to, each at `/api/<function>`."""
    functions: list[str] = []
    for rewrite in config["hosting"].get("rewrites", []):
        service = rewrite["run"]["serviceId"]
        if rewrite["source"] not in (
            f"{HOSTING_PREFIX}/{service}",
            f"{HOSTING_PREFIX}/{service}/**",
        ):
            raise ValueError(f"firebase.json: {rewrite['source']} is not /api/{service}[/**]")
        if service not in functions:
            functions.append(service)
    return functions


def _glob(pattern: str) -> re.Pattern[str]:
    """A Hosting `source` glob: `**` any run of path segments, `*` within one segment."""
    parts = re.split(r"(\*\*|\*)", pattern.lstrip("/"))
    body = "".join({"**": ".*", "*": "[^/]*"}.get(part, re.escape(part)) for part in parts)
    return re.compile(f"/?{body}")


def hosting_headers(config: Mapping[str, Any], path: str) -> dict[str, str]:
    """The headers firebase.json's `hosting.headers` give the page at `path` (later blocks win,
    as in Hosting). Locally the CSP's connect-src also names the Auth emulator the pages sign
    in with (in production the SDK calls Google's identity endpoints, which it lists)."""
    headers: dict[str, str] = {}
    for block in config["hosting"].get("headers", []):
        if _glob(block["source"]).fullmatch(path):
            headers.update({h["key"]: h["value"] for h in block["headers"]})
    emulator = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")
    csp = headers.get("Content-Security-Policy")
    if emulator and csp:
        headers["Content-Security-Policy"] = csp.replace(
            "connect-src 'self'", f"connect-src 'self' http://{emulator}", 1
        )
    return headers


def hosting(apps: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> Any:
    """The front end's origin as Firebase Hosting serves it in production: the files of
    firebase.json's `public` folder, its rewrites of `/api/<function>/**` to the functions
    (the whole path, only the `__session` cookie), and the reserved `/__/firebase/init.json`
    (here also naming the Auth emulator the pages are to sign in with). Pages and API share
    one origin, so the HttpOnly, SameSite=Strict session cookie goes with every call."""
    config = config if config is not None else json.loads(FIREBASE_JSON.read_text())
    public = (ROOT / config["hosting"]["public"]).resolve()
    site = flask.Flask("hosting", static_folder=None)

    @site.get(FIREBASE_INIT)
    def firebase_init() -> Any:
        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "")
        init: dict[str, Any] = {
            "projectId": project,
            "apiKey": "local-api-key",  # the Auth emulator takes any key
            "authDomain": f"{project}.firebaseapp.com",
        }
        emulator = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")
        if emulator:
            init["authEmulatorUrl"] = f"http://{emulator}"
        response = flask.jsonify(init)
        response.headers["Cache-Control"] = "no-store"
        return response

    @site.get("/", defaults={"path": ""})
    @site.get("/<path:path>")
    def page(path: str) -> Any:
        # Hosting serves a folder's index.html and never a dotfile (firebase.json's ignore).
        target = path if path and not path.endswith("/") else path + "index.html"
        if not (public / target).is_file() and (public / target / "index.html").is_file():
            target += "/index.html"
        hidden = any(part.startswith(".") for part in path.split("/"))
        if (
            hidden
            or not (public / target).resolve().is_relative_to(public)
            or not ((public / target).is_file())
        ):
            # Hosting answers a missing page with the site's 404.html, status 404.
            response = flask.send_from_directory(public, "404.html", max_age=0)
            response.status_code = 404
        else:
            response = flask.send_from_directory(public, target, max_age=0)
        response.headers.update(hosting_headers(config, "/" + path))
        return response

    mounts = {f"{HOSTING_PREFIX}/{n}": _as_rewritten(apps[n]) for n in hosting_rewrites(config)}
    return DispatcherMiddleware(site.wsgi_app, mounts)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # every function writes its own structured access log line


def main() -> None:
    from dev import query_indexes

    query_indexes.install()  # only when ALODOKTOR_QUERY_LOG is set (the test run sets it)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument(
        "--hosting-port",
        type=int,
        help="also serve the front end's origin here, as Firebase Hosting will (hosting/public "
        "and /api/<function>/**)",
    )
    args = parser.parse_args()
    app, apps = build()
    print(
        json.dumps({"severity": "INFO", "message": f"gateway serving {sorted(apps)}"}), flush=True
    )
    if args.hosting_port is not None:
        site = make_server(
            args.host,
            args.hosting_port,
            hosting(apps),
            threaded=True,
            request_handler=_QuietHandler,
        )
        threading.Thread(target=site.serve_forever, name="hosting", daemon=True).start()
    run_simple(
        args.host, args.port, app, threaded=True, use_reloader=False, request_handler=_QuietHandler
    )


if __name__ == "__main__":
    main()

"""One local process serving every function under /<function-name>, as deployed.

Each function is loaded with functions-framework's own app factory from its folder, exactly as
the Cloud Functions runtime loads it, and mounted at its name. The gateway adds a merged
OpenAPI document at /openapi.json and a docs page at /docs.
"""

from __future__ import annotations

import argparse
import html
import json
from typing import Any

import flask
import functions_framework
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import WSGIRequestHandler, run_simple

from tools.bundle import FUNCTIONS_DIR, function_names, target_of


def build() -> tuple[Any, dict[str, flask.Flask]]:
    apps = {
        name: functions_framework.create_app(  # type: ignore[no-untyped-call]
            target=target_of(name), source=str(FUNCTIONS_DIR / name / "main.py")
        )
        for name in function_names()
    }
    root = flask.Flask("gateway")

    def merged() -> dict[str, Any]:
        doc: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": "Alo Doktor backend", "version": "1.0.0"},
            "paths": {},
            "components": {"schemas": {}, "securitySchemes": {}},
        }
        for app in apps.values():
            response = app.test_client().get("/openapi.json")
            if response.status_code != 200:
                continue  # event functions have no HTTP document
            part = response.get_json()
            doc["paths"].update(part["paths"])
            for key in ("schemas", "securitySchemes"):
                doc["components"][key].update(part["components"].get(key, {}))
        return doc

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

    mounted = DispatcherMiddleware(
        root.wsgi_app, {f"/{n}": _as_deployed(a) for n, a in apps.items()}
    )
    return mounted, apps


def _as_deployed(app: Any) -> Any:
    """Give a function `/` for a request to its bare URL, as Cloud Functions does."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("PATH_INFO"):
            environ["PATH_INFO"] = "/"
        return app(environ, start_response)

    return wsgi


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # every function writes its own structured access log line


def main() -> None:
    from dev import query_indexes

    query_indexes.install()  # only when ALODOKTOR_QUERY_LOG is set (the test run sets it)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    app, apps = build()
    print(
        json.dumps({"severity": "INFO", "message": f"gateway serving {sorted(apps)}"}), flush=True
    )
    run_simple(
        args.host, args.port, app, threaded=True, use_reloader=False, request_handler=_QuietHandler
    )


if __name__ == "__main__":
    main()

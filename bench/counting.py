"""Count what a served function asks of Firestore and of the Firebase Auth API (bench only).

    python -I bench/counting.py --target NAME [--source main.py] [--port N]

run with a bundle as its cwd, serves the function as `python -m functions_framework` does (the
same app factory, the same gunicorn server and settings), with counters installed in the worker:

  firestore   every gRPC call of every channel (a client interceptor on each channel made):
              calls by method, document reads (each document a BatchGetDocuments answers, found
              or missing; each a RunQuery returns, and at least one per query; one per
              aggregation query, as Firestore bills them) and document writes (per Commit or
              BatchWrite)
  http        every `requests` call (Session.send, which firebase-admin and google-auth use):
              to the Auth API (identitytoolkit / securetoken, the emulator included), to a key
              endpoint (token signing keys), or elsewhere

Every response carries the running totals in a header (COUNTS_HEADER, JSON); a client sending
one request at a time reads each request's counts as the difference between two answers. The
counters are in the server; nothing is assumed about what the code does.

The file is self-contained (no import of the repository) because `-I` keeps the repository off
sys.path: the bundle's own `shared/` must be the one served.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

COUNTS_HEADER = "X-Bench-Counts"
FIRESTORE_SERVICE = "/google.firestore.v1.Firestore/"
AUTH_API_MARKERS = ("identitytoolkit.googleapis.com", "securetoken.googleapis.com/v1/token")
KEY_MARKERS = ("/robot/v1/metadata/", "/relyingparty/publicKeys", "securetoken@system")


class Counters:
    """Totals since the process started, safe to bump from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What happened between two snapshots (names absent from one count as zero)."""
    names = set(before) | set(after)
    return {n: after.get(n, 0) - before.get(n, 0) for n in sorted(names)}


def classify_url(url: str) -> str:
    """'auth' for the Auth API (emulated or not), 'keys' for a token key endpoint, else 'other'."""
    if any(m in url for m in KEY_MARKERS):
        return "keys"
    if any(m in url for m in AUTH_API_MARKERS):
        return "auth"
    return "other"


def _raw(message: Any) -> Any:
    # Raw protobuf messages have HasField; proto-plus wrappers expose theirs through .pb().
    return type(message).pb(message) if hasattr(type(message), "pb") else message


def collection_of(name: str) -> str:
    """The collection id of a document name (projects/p/databases/d/documents/users/u1 -> users;
    a subcollection's own id for a nested document)."""
    parts = name.split("/documents/", 1)[-1].split("/")
    return parts[-2] if len(parts) >= 2 else "?"


def _read_of_lookup(message: Any) -> str | None:
    """The collection a BatchGetDocuments answer read (found or missing), else None."""
    raw = _raw(message)
    if raw.HasField("found"):
        return collection_of(raw.found.name)
    if raw.HasField("missing"):
        return collection_of(raw.missing)
    return None


def _read_of_query(message: Any) -> str | None:
    raw = _raw(message)
    return collection_of(raw.document.name) if raw.HasField("document") else None


class _CountedStream:
    """A streamed gRPC answer, counted as it is read; everything else goes to the real call."""

    def __init__(self, call: Any, on_message: Callable[[Any], None], on_end: Callable[[], None]):
        self._call = call
        self._on_message = on_message
        self._on_end = on_end
        self._ended = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            message = next(self._call)
        except StopIteration:
            if not self._ended:
                self._ended = True
                self._on_end()
            raise
        self._on_message(message)
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def _grpc() -> Any:
    import grpc  # type: ignore[import-untyped]

    return grpc


class _Counting:
    """The interceptor's methods; firestore_interceptor() adds gRPC's four interceptor bases."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def _method(self, details: Any) -> str | None:
        method = str(details.method)
        if not method.startswith(FIRESTORE_SERVICE):
            return None
        name = method.removeprefix(FIRESTORE_SERVICE)
        self.counters.add(f"firestore.call.{name}")
        return name

    def _read(self, collection: str) -> None:
        self.counters.add("firestore.reads")
        self.counters.add(f"firestore.reads.{collection}")

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if self._method(details) in ("Commit", "BatchWrite"):
            self.counters.add("firestore.writes", len(request.writes))
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        name = self._method(details)
        call = continuation(details, request)
        if name == "BatchGetDocuments":

            def on_lookup(m: Any) -> None:
                collection = _read_of_lookup(m)
                if collection is not None:
                    self._read(collection)

            return _CountedStream(call, on_lookup, lambda: None)
        if name == "RunQuery":
            seen = [0]

            def on_row(m: Any) -> None:
                collection = _read_of_query(m)
                if collection is not None:
                    seen[0] += 1
                    self._read(collection)

            def on_end() -> None:
                if seen[0] == 0:  # a query that finds nothing is billed one read
                    self._read("(empty query)")

            return _CountedStream(call, on_row, on_end)
        if name == "RunAggregationQuery":
            self._read("(aggregation)")
        return call

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        self._method(details)
        return continuation(details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        self._method(details)
        return continuation(details, requests)


def firestore_interceptor(counters: Counters) -> Any:
    """A gRPC client interceptor (all four kinds) counting Firestore calls, reads and writes."""
    grpc = _grpc()
    bases = (
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    )
    # grpc checks isinstance against its interceptor classes, which it ships without type
    # hints: the class is put together here rather than declared with them as bases.
    return type("CountingInterceptor", (_Counting, *bases), {})(counters)


def install(counters: Counters) -> Callable[[], None]:
    """Count every gRPC channel made from now on and every `requests` call; returns the undo."""
    import requests

    grpc = _grpc()

    interceptor = firestore_interceptor(counters)
    real_insecure, real_secure = grpc.insecure_channel, grpc.secure_channel
    real_send = requests.Session.send

    def insecure_channel(*args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(real_insecure(*args, **kwargs), interceptor)

    def secure_channel(*args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(real_secure(*args, **kwargs), interceptor)

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        counters.add(f"http.{classify_url(str(request.url))}")
        return real_send(self, request, **kwargs)

    grpc.insecure_channel = insecure_channel
    grpc.secure_channel = secure_channel
    requests.Session.send = send  # type: ignore[method-assign]

    def undo() -> None:
        grpc.insecure_channel, grpc.secure_channel = real_insecure, real_secure
        requests.Session.send = real_send  # type: ignore[method-assign]

    return undo


def add_header(app: Any, counters: Counters) -> None:
    """Every answer of the Flask app carries the totals so far."""

    def stamp(response: Any) -> Any:
        response.headers[COUNTS_HEADER] = json.dumps(counters.snapshot(), separators=(",", ":"))
        return response

    app.after_request(stamp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/counting.py")
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", default="main.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)

    import functions_framework
    from functions_framework._http import create_server

    counters = Counters()
    app = functions_framework.create_app(args.target, args.source, "http")  # type: ignore[no-untyped-call]
    add_header(app, counters)

    # Installed in gunicorn's worker, after the fork, where requests are served; nothing of
    # gRPC is touched in the arbiter, as in production.
    def post_worker_init(worker: Any) -> None:
        install(counters)

    server = create_server(app, False, post_worker_init=post_worker_init)  # type: ignore[no-untyped-call]
    server.run(args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

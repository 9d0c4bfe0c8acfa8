"""Local Eventarc: the Firestore emulator's document events, delivered to the event functions.

    python -m dev.relay --gateway http://127.0.0.1:5001 --port 8099 [--ready-file PATH]

The Firestore emulator knows each write as it commits it; started with
`--functions_emulator=127.0.0.1:<port>` it posts a `document.v1.*` CloudEvent for every write
that matches a registered trigger (the API firebase-tools' functions emulator uses:
`POST /emulator/v1/projects/{project}/eventarcTrigger?eventarcTriggerId=...`). The relay
registers the same triggers Terraform creates (terraform/events.tf: one per function and
collection, `{collection}/{document}`, `written` for the audit trigger and `created` for notify),
takes each event the emulator posts, and delivers it to its function through the gateway exactly
as Eventarc does: binary content mode, `Content-Type: application/protobuf`, the serialized
DocumentEventData as raw bytes, `ce-*` headers.

Between the two it does what Eventarc does and the emulator does not: the emulator posts once
and forgets (its body base64 text, its `ce-time` in whole seconds, its `ce-source` naming the
project twice), while the relay answers the emulator at once and delivers at least once, with
retries, concurrently, on one lane per function (a function failing never holds back
another's events).

Listening to the collections instead (Watch streams, as this relay once did) cannot keep up:
after each write the emulator sends a listener every document of the collection again, so the
cost of a write grows with the collection, and a test run's relay fell five minutes behind.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from shared.audit import rules as audit_log
from shared.audit.events import DATA_SCHEMA, EVENT_TYPE
from shared.platform.outbox import NOTIFICATIONS

CREATED_TYPE = "google.cloud.firestore.document.v1.created"
LOCATION = "nam5"
DATABASE = "(default)"
RETRY_DELAYS = (0.2, 0.5, 1, 2, 4, 8, 15, 30)  # then the event is given up, loudly
WORKERS = 4  # Eventarc delivers concurrently; so does the relay, to exercise the same races
BACKLOG_WARNING = 200  # events waiting on one lane: said once per crossing, with the count
TRIGGER_PATH = "/functions/projects/{project}/triggers/"

log = logging.getLogger("alodoktor.relay")


@dataclass(frozen=True)
class Trigger:
    """One Eventarc trigger: a function, the top-level collection it follows, which changes."""

    function: str
    collection: str
    event_type: str

    @property
    def id(self) -> str:
        return f"{self.function}-{self.collection.lower()}"  # as terraform/events.tf names it

    def registration(self) -> dict[str, Any]:
        """The body of the emulator's eventarcTrigger registration."""
        return {
            "eventType": self.event_type,
            "database": DATABASE,
            "namespace": "(default)",
            "document": {"value": f"{self.collection}/{{document}}", "matchType": "PATH_PATTERN"},
        }


# The triggers terraform/events.tf creates, from the same lists (tools/terraform_inputs.py).
TRIGGERS: tuple[Trigger, ...] = (
    *(Trigger("audit-trigger", c, EVENT_TYPE) for c in sorted(audit_log.AUDITED_COLLECTIONS)),
    Trigger("notify", NOTIFICATIONS, CREATED_TYPE),
)


@dataclass(frozen=True)
class Event:
    """One CloudEvent in binary content mode: its headers and protobuf body."""

    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["ce-id"]


class NotAnEmulatorEvent(ValueError):
    pass


def _rfc3339(moment: datetime) -> str:
    return audit_log.format_time(moment)


def _headers(
    project: str, path: str, event_id: str, at: datetime, event_type: str
) -> dict[str, str]:
    return {
        "Content-Type": "application/protobuf",
        "ce-id": event_id,
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/{DATABASE}",
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-dataschema": DATA_SCHEMA,
        "ce-subject": f"documents/{path}",
        "ce-time": _rfc3339(at),
        "ce-document": path,
        "ce-database": DATABASE,
        "ce-namespace": "(default)",
        "ce-project": project,
        "ce-location": LOCATION,
    }


def from_emulator(project: str, headers: Mapping[str, str], body: bytes) -> Event:
    """The event Eventarc would send for what the emulator posted (headers case-insensitive).

    Its `ce-time` becomes the document's update time (the commit time, to the microsecond, as
    Eventarc's is; the emulator's has whole seconds), or for a delete the time it arrived.
    """
    from google.events.cloud.firestore_v1.types import DocumentEventData
    from google.protobuf.message import DecodeError

    attributes = {k.lower(): v for k, v in headers.items()}
    path = attributes.get("ce-document", "")
    event_type = attributes.get("ce-type", "")
    event_id = attributes.get("ce-id", "")
    if not path or not event_type or not event_id:
        raise NotAnEmulatorEvent("an event without ce-document, ce-type or ce-id")
    try:
        raw = base64.b64decode(body, validate=True)
        data = DocumentEventData.pb().FromString(raw)
    except (binascii.Error, DecodeError) as exc:
        raise NotAnEmulatorEvent("the body is not a base64 DocumentEventData") from exc
    if data.HasField("value"):
        at = data.value.update_time.ToDatetime(tzinfo=UTC)
    else:
        at = datetime.now(UTC)
    return Event(_headers(project, path, event_id, at, event_type), raw)


def document(project: str, snapshot: Any) -> Any:
    """A google.events Document from a Firestore DocumentSnapshot (wire-compatible messages)."""
    from google.cloud.firestore_v1 import _helpers
    from google.cloud.firestore_v1.types import Document as FirestoreDocument
    from google.events.cloud.firestore_v1.types import Document as EventDocument

    doc = FirestoreDocument(
        name=f"projects/{project}/databases/{DATABASE}/documents/{snapshot.reference.path}",
        fields=_helpers.encode_dict(snapshot.to_dict() or {}),
        create_time=snapshot.create_time,
        update_time=snapshot.update_time,
    )
    return EventDocument.deserialize(FirestoreDocument.serialize(doc))


def cloud_event(
    project: str,
    path: str,
    old: Any | None,
    new: Any | None,
    at: datetime,
    event_type: str = EVENT_TYPE,
) -> Event:
    """The CloudEvent Eventarc sends for a write of document `path` (snapshots old -> new): for
    tests that deliver an event of their own making."""
    from google.events.cloud.firestore_v1.types import DocumentEventData, DocumentMask

    data = DocumentEventData()
    if new is not None:
        data.value = document(project, new)
    if old is not None:
        data.old_value = document(project, old)
    if old is not None and new is not None:
        before, after = old.to_dict() or {}, new.to_dict() or {}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        data.update_mask = DocumentMask(field_paths=changed)
    headers = _headers(project, path, str(uuid.uuid4()), at, event_type)
    return Event(headers, DocumentEventData.serialize(data))


class _Server(ThreadingHTTPServer):
    # The emulator posts once and does not retry: a burst of writes must find room to
    # connect (socketserver's default listen backlog is 5).
    request_queue_size = 128
    daemon_threads = True


class Relay:
    def __init__(
        self,
        project: str,
        gateway: str,
        triggers: tuple[Trigger, ...] = TRIGGERS,
        *,
        workers: int = WORKERS,
        post: Callable[[str, Event], bool] | None = None,
    ) -> None:
        self.project = project
        self.gateway = gateway.rstrip("/")
        self.triggers = {t.id: t for t in triggers}
        self.workers = workers
        self._post = post or self._http_post
        self._lanes: dict[str, queue.Queue[Event | None]] = {
            t.function: queue.Queue() for t in triggers
        }
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._http = threading.local()  # one requests.Session per delivering thread
        self.delivered = 0
        self.failed = 0

    @property
    def functions(self) -> list[str]:
        return sorted(self._lanes)

    def start(self, port: int, emulator: str) -> None:
        """Deliver on every lane, take events on `port`, then register the triggers with the
        emulator at `emulator` (host:port): nothing can be posted before it is taken."""
        for function, lane in self._lanes.items():
            for _ in range(self.workers):
                thread = threading.Thread(
                    target=self._deliver_loop, args=(function, lane), daemon=True
                )
                thread.start()
                self._threads.append(thread)
        self._server = _Server(("127.0.0.1", port), self._handler())
        server = threading.Thread(target=self._server.serve_forever, daemon=True)
        server.start()
        self._threads.append(server)
        for trigger in self.triggers.values():
            answer = requests.post(
                f"http://{emulator}/emulator/v1/projects/{self.project}/eventarcTrigger",
                params={"eventarcTriggerId": trigger.id},
                data=json.dumps(trigger.registration()),
                timeout=30,
            )
            answer.raise_for_status()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for lane in self._lanes.values():
            for _ in range(self.workers):
                lane.put(None)
        # Within the stack's grace period: a worker still retrying an event is abandoned (the
        # threads are daemons), as Eventarc's pending deliveries die with a local stack.
        deadline = time.monotonic() + 3
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def accept(self, trigger_id: str, headers: Mapping[str, str], body: bytes) -> Event:
        """Queue for delivery what the emulator posted for `trigger_id`."""
        trigger = self.triggers.get(trigger_id)
        if trigger is None:
            raise KeyError(trigger_id)
        event = from_emulator(self.project, headers, body)
        if event.headers["ce-type"] != trigger.event_type:
            raise NotAnEmulatorEvent(f"a {event.headers['ce-type']} event for {trigger_id}")
        lane = self._lanes[trigger.function]
        lane.put(event)
        waiting = lane.qsize()
        if waiting == BACKLOG_WARNING:  # once per crossing: the lane fills faster than it drains
            log.warning("%d events waiting for %s", waiting, trigger.function)
        return event

    def queued(self, function: str) -> list[Event]:
        """What waits on `function`'s lane, taken off it (for tests without workers)."""
        lane, taken = self._lanes[function], []
        while not lane.empty():
            item = lane.get_nowait()
            if item is not None:
                taken.append(item)
        return taken

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self
        prefix = TRIGGER_PATH.format(project=self.project)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.startswith(prefix):
                    self._answer(404, f"not a trigger of {relay.project}: {self.path}")
                    return
                try:
                    relay.accept(self.path.removeprefix(prefix), dict(self.headers), body)
                except KeyError:
                    self._answer(404, f"no trigger {self.path.removeprefix(prefix)}")
                except NotAnEmulatorEvent as exc:
                    log.error("refused an event for %s: %s", self.path, exc)
                    self._answer(400, str(exc))
                else:
                    self._answer(200, "queued")

            def _answer(self, status: int, text: str) -> None:
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # each delivery is logged by the function that takes it

        return Handler

    def _deliver_loop(self, function: str, lane: queue.Queue[Event | None]) -> None:
        while (event := lane.get()) is not None:
            if self.deliver(function, event):
                self.delivered += 1
            else:
                self.failed += 1
                log.error("gave up delivering event %s to %s", event.id, function)

    def deliver(self, function: str, event: Event) -> bool:
        for delay in (*RETRY_DELAYS, None):
            if self._post(function, event):
                return True
            if delay is None:
                break
            time.sleep(delay)
        return False

    def _http_post(self, function: str, event: Event) -> bool:
        session = getattr(self._http, "session", None)
        if session is None:
            session = self._http.session = requests.Session()
        try:
            response = session.post(
                f"{self.gateway}/{function}", data=event.body, headers=event.headers, timeout=60
            )
        except requests.RequestException as exc:
            log.warning("event %s to %s: %r", event.id, function, exc)
            return False
        if response.ok:
            return True
        log.warning("event %s to %s: HTTP %s", event.id, function, response.status_code)
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:5001")
    parser.add_argument("--port", type=int, default=8099, help="where the emulator posts events")
    parser.add_argument("--ready-file", type=Path, help="created once every trigger is registered")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ["GCLOUD_PROJECT"]
    emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if not emulator:
        print("relay: FIRESTORE_EMULATOR_HOST is not set; Eventarc does this in production")
        return 2
    relay = Relay(project, args.gateway)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    relay.start(args.port, emulator)
    functions = ", ".join(relay.functions)
    message = f"relay delivering to {functions} ({len(relay.triggers)} triggers)"
    print(json.dumps({"severity": "INFO", "message": message}))
    sys.stdout.flush()
    if args.ready_file:
        args.ready_file.write_text("ready\n")
    with contextlib.suppress(KeyboardInterrupt):
        stopping.wait()
    relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

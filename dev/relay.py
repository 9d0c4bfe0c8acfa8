"""Local Eventarc: Firestore changes on the emulator, posted to event functions as CloudEvents.

    python -m dev.relay --gateway http://127.0.0.1:5001 [--ready-file PATH]

It listens (the emulator's listen stream, through `on_snapshot`) to every audited collection
group and remembers the last state it saw of each document, which is the `old_value` of the
next change. Each create, update and delete is posted to each event function through the
gateway exactly as Eventarc sends `google.cloud.firestore.document.v1.written`: binary content
mode, `Content-Type: application/protobuf`, a serialized DocumentEventData, and `ce-*` headers.

Like Eventarc it delivers at least once, retrying a failed post; unlike Eventarc it cannot see
writes that the listen stream coalesces (several writes to one document faster than the stream
reports them arrive as one change). The documents present when it starts are its baseline and
produce no events, so the stack starts it before anything writes.

Functions in CREATED_ONLY (notify) get only creations, as `document.v1.created` events, which is
what their Eventarc trigger filters for. A notice queued while the relay was not listening is
in its baseline and never announced: notify's sweep delivers it, as in production it delivers
what a lost event missed.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

import requests

from shared.audit import rules as audit_log
from shared.audit.events import DATA_SCHEMA, EVENT_TYPE

# Which event function gets the changes of which collection groups (one Eventarc trigger each).
TARGETS: Mapping[str, frozenset[str]] = {
    "audit-trigger": audit_log.AUDITED_COLLECTIONS,
    "notify": frozenset({"notifications"}),
}
# Functions whose trigger takes document creations only (`document.v1.created`).
CREATED_ONLY: frozenset[str] = frozenset({"notify"})
CREATED_TYPE = "google.cloud.firestore.document.v1.created"
LOCATION = "nam5"
DATABASE = "(default)"
RETRY_DELAYS = (0.2, 0.5, 1, 2, 4, 8, 15, 30)  # then the event is given up, loudly
WORKERS = 4  # Eventarc delivers concurrently; so does the relay, to exercise the same races

log = logging.getLogger("alodoktor.relay")


@dataclass(frozen=True)
class Event:
    """One CloudEvent in binary content mode: its headers and protobuf body."""

    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["ce-id"]


def _rfc3339(moment: datetime) -> str:
    return audit_log.format_time(moment)


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
    """The CloudEvent Eventarc sends for a write of document `path` (snapshots old -> new)."""
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
    headers = {
        "Content-Type": "application/protobuf",
        "ce-id": str(uuid.uuid4()),
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
    return Event(headers, DocumentEventData.serialize(data))


class Relay:
    def __init__(
        self,
        project: str,
        gateway: str,
        targets: Mapping[str, frozenset[str]] = TARGETS,
        *,
        workers: int = WORKERS,
        post: Callable[[str, Event], bool] | None = None,
    ) -> None:
        self.project = project
        self.gateway = gateway.rstrip("/")
        self.targets = targets
        self.workers = workers
        self._post = post or self._http_post
        self._last: dict[str, Any] = {}  # document path -> last snapshot seen
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Event] | None] = queue.Queue()
        self._watches: list[Any] = []
        self._baselines: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self.delivered = 0
        self.failed = 0

    def start(self, timeout: float = 60) -> None:
        from google.cloud import firestore

        db = firestore.Client(project=self.project)
        # One lane of workers per function, as each Eventarc trigger delivers on its own: a
        # function failing (and being retried) never holds back another's events.
        lanes: dict[str, queue.Queue[tuple[str, Event] | None]] = {}
        for function in self.targets:
            lanes[function] = queue.Queue()
            for _ in range(self.workers):
                thread = threading.Thread(
                    target=self._deliver_loop, args=(lanes[function],), daemon=True
                )
                thread.start()
                self._threads.append(thread)
        dispatcher = threading.Thread(target=self._dispatch_loop, args=(lanes,), daemon=True)
        dispatcher.start()
        self._threads.append(dispatcher)
        for group in sorted(set().union(*self.targets.values())):
            self._baselines[group] = threading.Event()
            self._watches.append(db.collection_group(group).on_snapshot(self._listener(group)))
        deadline = time.monotonic() + timeout
        for group, seen in self._baselines.items():
            if not seen.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"no snapshot of {group} within {timeout:.0f}s")

    def stop(self) -> None:
        for watch in self._watches:
            watch.unsubscribe()
        self._queue.put(None)  # the dispatcher passes it on to every worker
        # Within the stack's grace period: a worker still retrying an event is abandoned (the
        # threads are daemons), as Eventarc's pending deliveries die with a local stack.
        deadline = time.monotonic() + 3
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _listener(self, group: str) -> Callable[[Any, Any, Any], None]:
        baseline = self._baselines[group]

        def on_snapshot(docs: Any, changes: Any, read_time: Any) -> None:
            if not baseline.is_set():
                with self._lock:
                    for snap in docs:
                        self._last[snap.reference.path] = snap
                baseline.set()
                return
            for change in changes:
                self._on_change(group, change, read_time)

        return on_snapshot

    def _on_change(self, group: str, change: Any, read_time: Any) -> None:
        snap = change.document
        path = snap.reference.path
        with self._lock:
            if change.type.name == "REMOVED":
                old, new = self._last.pop(path, snap), None
            else:
                old, new = self._last.get(path), snap
                self._last[path] = snap
        at = new.update_time if new is not None else (read_time or datetime.now(UTC))
        event = cloud_event(self.project, path, old, new, at)
        created: Event | None = None
        for function, groups in self.targets.items():
            if group not in groups:
                continue
            if function not in CREATED_ONLY:
                self._queue.put((function, event))
            elif old is None and new is not None:
                created = created or cloud_event(self.project, path, None, new, at, CREATED_TYPE)
                self._queue.put((function, created))

    def _dispatch_loop(self, lanes: Mapping[str, queue.Queue[tuple[str, Event] | None]]) -> None:
        while (item := self._queue.get()) is not None:
            lanes[item[0]].put(item)
        for lane in lanes.values():
            for _ in range(self.workers):
                lane.put(None)

    def _deliver_loop(self, lane: queue.Queue[tuple[str, Event] | None]) -> None:
        while (item := lane.get()) is not None:
            function, event = item
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
        try:
            response = requests.post(
                f"{self.gateway}/{function}", data=event.body, headers=event.headers, timeout=60
            )
        except requests.RequestException as exc:
            log.warning("event %s to %s: %r", event.id, function, exc)
            return False
        if response.ok:
            return True
        log.warning("event %s to %s: HTTP %s", event.id, function, response.status_code)
        return False


def watch_changes_only() -> None:
    """Make the client's listen bookkeeping cost what a change costs, not what the collection
    holds. google-cloud-firestore's Watch copies its whole document set on every added or
    removed document and sorts all of it for every snapshot it hands over: per change, work in
    proportion to every document of the collection group, which in a test run is every document
    the run wrote (the relay was measured at two thirds of a core by the end of one). The relay
    reads the whole set once, for its baseline, and only the changes after that; so the set is
    updated in place and later snapshots carry their changes without the sorted set. For this
    process only: the relay is its sole listener."""
    from google.cloud.firestore_v1 import watch

    def insert(tree: Any, key: Any, value: Any) -> Any:
        tree._dict[key] = watch.DocTreeEntry(value, tree._index)
        tree._index += 1
        return tree

    def remove(tree: Any, key: Any) -> Any:
        del tree._dict[key]
        return tree

    first_push: Any = watch.Watch.push

    def push(w: Any, read_time: Any, next_resume_token: Any) -> None:
        if not w.has_pushed:
            first_push(w, read_time, next_resume_token)  # the baseline: the whole, sorted set
            return
        deletes, adds, updates = w._extract_changes(w.doc_map, w.change_map, read_time)
        tree, doc_map, applied = w._compute_snapshot(w.doc_tree, w.doc_map, deletes, adds, updates)
        if applied:
            w._snapshot_callback([], applied, read_time)
        w.doc_tree, w.doc_map = tree, doc_map
        w.change_map.clear()
        w.resume_token = next_resume_token

    watch.WatchDocTree.insert = insert  # type: ignore[method-assign]
    watch.WatchDocTree.remove = remove  # type: ignore[method-assign]
    watch.Watch.push = push  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:5001")
    parser.add_argument("--ready-file", type=Path, help="created once every listener is live")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ["GCLOUD_PROJECT"]
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        print("relay: FIRESTORE_EMULATOR_HOST is not set; Eventarc does this in production")
        return 2
    watch_changes_only()
    relay = Relay(project, args.gateway)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    relay.start()
    functions = ", ".join(sorted(relay.targets))
    print(json.dumps({"severity": "INFO", "message": f"relay delivering to {functions}"}))
    sys.stdout.flush()
    if args.ready_file:
        args.ready_file.write_text("ready\n")
    with contextlib.suppress(KeyboardInterrupt):
        stopping.wait()
    relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

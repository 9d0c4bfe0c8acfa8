"""Cloud Tasks: named HTTP tasks delivered with a Google OIDC token, through google-cloud-tasks.

The same code enqueues in production and on the local stack; only the address differs. It
uses the client's REST transport everywhere: in production that is Cloud Tasks' own REST API,
locally CLOUD_TASKS_EMULATOR_HOST names dev/cloud_tasks.py, which speaks that API in front of
firebase-tools' Cloud Tasks emulator.

A task's name is its identity: Cloud Tasks refuses a second task of the same name (409
ALREADY_EXISTS, for about an hour after the first ran), which `enqueue` reports as False, so
enqueuers that race each other (two runs of a schedule) make one task between them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from shared.platform import logs, settings

log = logs.get("alodoktor.cloud_tasks")


@dataclass(frozen=True)
class HttpTask:
    queue: str
    task_id: str
    url: str
    body: dict[str, Any]
    # Cloud Tasks signs an OIDC token for this service account and audience on each delivery.
    service_account: str
    audience: str
    dispatch_deadline_seconds: int = 300


@functools.cache
def _client() -> Any:
    from google.cloud import tasks_v2

    emulator = settings.get().cloud_tasks_emulator_host
    if emulator:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        endpoint = emulator if "://" in emulator else f"http://{emulator}"
        return tasks_v2.CloudTasksClient(
            transport="rest",
            client_options=ClientOptions(api_endpoint=endpoint),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    return tasks_v2.CloudTasksClient(transport="rest")


def task_name(queue: str, task_id: str) -> str:
    s = settings.get()
    return (
        f"projects/{s.project_id}/locations/{s.cloud_tasks_location}/queues/{queue}/tasks/{task_id}"
    )


def enqueue(task: HttpTask) -> bool:
    """Create the task; True if made now, False if a task of that name exists already.
    Anything else (the queue unreachable) raises, and nothing was promised."""
    from google.api_core.exceptions import Conflict
    from google.cloud import tasks_v2
    from google.protobuf import duration_pb2

    s = settings.get()
    client = _client()
    parent = client.queue_path(s.project_id, s.cloud_tasks_location, task.queue)
    made = tasks_v2.Task(
        name=task_name(task.queue, task.task_id),
        http_request=tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=task.url,
            headers={"Content-Type": "application/json"},
            body=json.dumps(task.body, separators=(",", ":")).encode(),
            oidc_token=tasks_v2.OidcToken(
                service_account_email=task.service_account, audience=task.audience
            ),
        ),
        dispatch_deadline=duration_pb2.Duration(seconds=task.dispatch_deadline_seconds),
    )
    try:
        client.create_task(parent=parent, task=made, timeout=30)
    except Conflict:  # ALREADY_EXISTS (gRPC) or its HTTP 409 (REST)
        log.info("task %s exists already", task.task_id)
        return False
    return True

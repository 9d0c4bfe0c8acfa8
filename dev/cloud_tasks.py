"""Cloud Tasks, locally: firebase-tools' Cloud Tasks emulator behind the Cloud Tasks REST API.

Why this one: firebase-tools (pinned in package.json) ships a Cloud Tasks emulator that
refuses a reused task name (409) and retries failed deliveries with the queue's backoff,
attempt limit and dispatch deadline, as Cloud Tasks does; PyPI's gcloud-tasks-emulator takes
a reused name and delivers it twice, and ignores retry settings. Payouts rely on the refusal.

Why a front: that emulator is meant for the Firebase Admin SDK, not for Cloud Tasks' API. Its
paths lack `/v2`, its queues are made by an emulator-only call, it answers `{"task": ...}`, and
it delivers a task's `httpRequest.headers` but ignores `oidcToken`. So this process runs the
emulator (firebase-tools' own `TasksEmulator` class, from node_modules) on a private port and
serves the part of Cloud Tasks v2 REST our code calls (CreateTask), so that google-cloud-tasks
talks to it exactly as to Cloud Tasks (only the address differs):

- it creates the queues (as Terraform does in production), with this stack's retry settings;
- for a task with an `oidcToken`, it mints the token Cloud Tasks would attach, from
  dev/google_sim.py (the stack's stand-in for Google's OIDC signer), for that service account
  and audience, and hands it to the emulator as the delivery's Authorization header; so the
  worker checks the same Google-style token it checks in production (minted once per task
  here, once per attempt by Cloud Tasks: each lives an hour);
- it answers the emulator's 409 as Cloud Tasks' ALREADY_EXISTS, and its task as a Task.

Test controls: `GET /_sim/tasks` (every task accepted, and the names refused as reused),
`POST /_sim/faults {"status": 503, "count": n}` (the next n creates fail, as Cloud Tasks
unreachable would), `GET /_sim/health`.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import flask
import requests

from shared.platform import clock

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("alodoktor.cloud_tasks")

# The queues of the local stack and how they retry. Production's (terraform/) retry more
# patiently (docs/guides/local-stack.md); here a failed delivery comes back within seconds, so
# tests and `make dev` see retries happen.
_RETRIES = {"maxAttempts": 10, "minBackoffSeconds": 1, "maxBackoffSeconds": 8, "maxDoublings": 3}
QUEUES: dict[str, dict[str, Any]] = {
    "payouts": {
        "retryConfig": _RETRIES,
        # PayPal's rate limits are per app: few payouts at once, as in production.
        "rateLimits": {"maxConcurrentDispatches": 10, "maxDispatchesPerSecond": 20},
    },
    # Exports' builds: one task a part, each enqueueing the next.
    "privacy": {
        "retryConfig": _RETRIES,
        "rateLimits": {"maxConcurrentDispatches": 10, "maxDispatchesPerSecond": 20},
    },
}

# firebase-tools' own emulator class, run alone (its CLI starts it only beside the Functions
# emulator, which this project does not use).
_EMULATOR_JS = """
const path = require("path");
const [root, host, port] = process.argv.slice(1);
const { TasksEmulator } = require(
  path.join(root, "node_modules/firebase-tools/lib/emulator/tasksEmulator"));
new TasksEmulator({ host, port: parseInt(port, 10) }).start().then(
  () => console.log(`tasks emulator on ${host}:${port}`));
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """The firebase-tools emulator as a child process on a private port."""

    def __init__(self, project: str, location: str) -> None:
        self.project, self.location = project, location
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, queues: dict[str, dict[str, Any]]) -> None:
        self.process = subprocess.Popen(
            ["node", "-e", _EMULATOR_JS, str(ROOT), "127.0.0.1", str(self.port)],
            stdin=subprocess.DEVNULL,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the Cloud Tasks emulator exited ({self.process.returncode})")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/queueStats", timeout=1).ok:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the Cloud Tasks emulator did not start within 60s")
            time.sleep(0.2)
        for name, config in queues.items():
            made = requests.post(f"{self.url}/{self.queue_path(name)}", json=config, timeout=10)
            made.raise_for_status()

    def queue_path(self, queue: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/queues/{queue}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            if self.process.poll() is None:
                self.process.kill()


def _google_error(status: int, code: str, message: str) -> flask.Response:
    body = {"error": {"code": status, "message": message, "status": code}}
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


def create_app(emulator: Emulator, google_url: str) -> flask.Flask:
    app = flask.Flask("cloud_tasks")
    lock = threading.Lock()
    accepted: list[dict[str, Any]] = []
    refused: list[str] = []
    faults: list[int] = []

    def token_for(oidc: dict[str, Any], url: str) -> str:
        minted = requests.post(
            f"{google_url}/_sim/oidc-token",
            json={
                "email": oidc["serviceAccountEmail"],
                # Cloud Tasks' default audience is the target URL.
                "audience": oidc.get("audience") or url,
            },
            timeout=10,
        )
        minted.raise_for_status()
        return str(minted.json()["token"])

    @app.post("/v2/projects/<project>/locations/<location>/queues/<queue>/tasks")
    def create_task(project: str, location: str, queue: str) -> flask.Response:
        with lock:
            if faults:
                status = faults.pop(0)
                return _google_error(status, "UNAVAILABLE", "The service is unavailable.")
        if (project, location) != (emulator.project, emulator.location):
            return _google_error(404, "NOT_FOUND", f"Queue {queue} does not exist.")
        body = flask.request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("task"), dict):
            return _google_error(400, "INVALID_ARGUMENT", "The request has no task.")
        task: dict[str, Any] = body["task"]
        http = task.get("httpRequest")
        if not isinstance(http, dict) or not http.get("url"):
            return _google_error(400, "INVALID_ARGUMENT", "Only HTTP tasks with a URL here.")
        parent = emulator.queue_path(queue)
        name = task.get("name") or f"{parent}/tasks/{time.time_ns()}"
        if not str(name).startswith(parent + "/tasks/"):
            return _google_error(400, "INVALID_ARGUMENT", "The task's name is not in the queue.")
        headers = dict(http.get("headers") or {})
        oidc = http.get("oidcToken")
        if isinstance(oidc, dict) and oidc.get("serviceAccountEmail"):
            headers["Authorization"] = f"Bearer {token_for(oidc, http['url'])}"
        # The emulator reads the body as base64 JSON (as the Admin SDK sends it).
        raw = base64.b64decode(http.get("body") or "")
        try:
            json.loads(raw or b"{}")
        except ValueError:
            return _google_error(400, "INVALID_ARGUMENT", "This emulator delivers JSON bodies.")
        forwarded = {
            "name": name,
            "httpRequest": {
                "url": http["url"],
                "httpMethod": "POST",
                "headers": headers,
                "body": base64.b64encode(raw or b"{}").decode(),
            },
        }
        if task.get("dispatchDeadline"):
            forwarded["dispatchDeadline"] = task["dispatchDeadline"]
        answer = requests.post(
            f"{emulator.url}/{parent}/tasks", json={"task": forwarded}, timeout=10
        )
        if answer.status_code == 409:
            with lock:
                refused.append(str(name))
            return _google_error(409, "ALREADY_EXISTS", f"Task {name} already exists.")
        if answer.status_code == 404:
            return _google_error(404, "NOT_FOUND", f"Queue {queue} does not exist.")
        if not answer.ok:
            return _google_error(500, "INTERNAL", f"The emulator answered {answer.status_code}.")
        now = clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with lock:
            accepted.append({"name": name, "url": http["url"], "createdAt": now})
        shown = {
            "name": name,
            "httpRequest": {"url": http["url"], "httpMethod": "POST"},
            "scheduleTime": now,
            "createTime": now,
            "dispatchDeadline": task.get("dispatchDeadline") or "600s",
            "view": "BASIC",
        }
        return flask.Response(json.dumps(shown), status=200, mimetype="application/json")

    @app.get("/_sim/tasks")
    def tasks() -> flask.Response:
        with lock:
            body = {"tasks": list(accepted), "refused": list(refused)}
        return flask.Response(json.dumps(body), mimetype="application/json")

    @app.post("/_sim/faults")
    def add_faults() -> flask.Response:
        spec = flask.request.get_json(force=True)
        with lock:
            faults.extend([int(spec.get("status", 503))] * int(spec.get("count", 1)))
        return flask.Response(json.dumps({"queued": len(faults)}), mimetype="application/json")

    @app.delete("/_sim/faults")
    def clear_faults() -> flask.Response:
        with lock:
            faults.clear()
        return flask.Response(json.dumps({"queued": 0}), mimetype="application/json")

    @app.get("/_sim/health")
    def health() -> flask.Response:
        stats = requests.get(emulator.url + "/queueStats", timeout=5).json()
        return flask.Response(
            json.dumps({"ok": True, "queues": stats}), mimetype="application/json"
        )

    return app


def main() -> None:
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description="Cloud Tasks for the local stack.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9499)
    parser.add_argument("--google-url", required=True, help="dev/google_sim.py, which signs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="cloud-tasks %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "demo-alodoktor"
    location = os.environ.get("CLOUD_TASKS_LOCATION") or "us-central1"
    queues = {
        os.environ.get("PAYOUTS_QUEUE") or "payouts": QUEUES["payouts"],
        os.environ.get("PRIVACY_QUEUE") or "privacy": QUEUES["privacy"],
    }
    emulator = Emulator(project, location)

    def stop(signum: int, frame: object) -> None:
        emulator.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    emulator.start(queues)
    run_simple(args.host, args.port, create_app(emulator, args.google_url), threaded=True)


if __name__ == "__main__":
    main()

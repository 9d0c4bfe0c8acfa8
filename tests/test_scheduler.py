"""The local Cloud Scheduler (dev/scheduler.py): Terraform's jobs, on their cron schedules in
their time zone, called as Cloud Scheduler calls them, retried as their retry_config says."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import pytest
import requests
from werkzeug.serving import make_server

from dev import scheduler as local_scheduler
from dev.stack import SCHEDULER_SERVICE_ACCOUNT, Stack
from shared.platform import clock
from tests.support import eventually
from tools import schedules
from tools.schedules import Job, Retry

AT = datetime(2026, 12, 7, 5, 58, tzinfo=UTC)  # a Monday


def test_occurrences_follow_the_cron_in_the_jobs_time_zone() -> None:
    every_five = Job("seal", "audit", "/seal", "*/5 * * * *", "")
    assert (
        len(local_scheduler.occurrences(every_five, "Etc/UTC", AT, AT + timedelta(hours=1))) == 12
    )
    weekly = Job("run", "payouts", "/run", "0 6 * * 1", "")
    times = local_scheduler.occurrences(weekly, "Etc/UTC", AT, AT + timedelta(days=14))
    assert [t.astimezone(UTC) for t in times] == [
        AT + timedelta(minutes=2),
        AT + timedelta(days=7, minutes=2),
    ]
    # 06:00 in Jakarta (UTC+7) is 23:00 UTC the day before.
    jakarta = local_scheduler.next_after(weekly, "Asia/Jakarta", AT)
    assert jakarta.astimezone(UTC) == datetime(2026, 12, 13, 23, 0, tzinfo=UTC)


def test_cloud_schedulers_backoff_doubles_up_to_its_maximum() -> None:
    retry = Retry(count=5, min_backoff=10, max_backoff=60)
    assert [retry.backoff(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]


def test_the_stacks_scheduler_runs_exactly_terraforms_jobs(stack: Stack) -> None:
    listed = requests.get(stack.scheduler_url + "/_sim/jobs", timeout=10).json()
    config = schedules.load()
    assert {(j["name"], j["route"], j["schedule"]) for j in listed["jobs"]} == {
        (j.name, j.route, j.schedule) for j in config.jobs
    }
    assert all(j["timeZone"] == config.time_zone for j in listed["jobs"])
    assert listed["paused"] is True  # the test stacks fire only when told to


def test_a_job_run_by_hand_calls_its_route_as_the_scheduler(stack: Stack) -> None:
    started = requests.post(stack.scheduler_url + "/_sim/jobs/audit-seal/run", timeout=10)
    assert started.status_code == 202, started.text

    def runs() -> list[dict[str, Any]]:
        got = requests.get(stack.scheduler_url + "/_sim/runs", timeout=10).json()["runs"]
        return [r for r in got if r["job"] == "audit-seal" and r["manual"]]

    run = eventually(runs, bool, "the job's run")[-1]
    # 200: the audit function let the scheduler's OIDC token in (a person's would be 401/403).
    assert run["status"] == 200, run
    assert run["route"] == "POST /audit/seal"
    assert requests.post(stack.scheduler_url + "/_sim/jobs/nope/run", timeout=10).status_code == 404


class _Flaky:
    """A function that fails the first `failures` calls, recording what each call carried."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict[str, str]] = []
        app = flask.Flask("flaky")

        @app.post("/audit/seal")
        def seal() -> Any:
            self.calls.append(dict(flask.request.headers))
            return ({"ok": False}, 503) if len(self.calls) <= self.failures else {"ok": True}

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def flaky() -> Iterator[_Flaky]:
    function = _Flaky(failures=2)
    yield function
    function.server.shutdown()


def test_a_failed_call_is_retried_with_backoff_and_an_oidc_token(
    stack: Stack, flaky: _Flaky
) -> None:
    config = replace(
        schedules.load(),
        retry=Retry(count=3, min_backoff=0.05, max_backoff=0.2),
        jobs=(Job("audit-seal", "audit", "/seal", "*/5 * * * *", "seal"),),
    )
    sched = local_scheduler.Scheduler(
        config=config,
        gateway=flaky.url,
        google_url=stack.google_url,
        audience_base=stack.gateway_url,
        scheduler_account=SCHEDULER_SERVICE_ACCOUNT,
        paused=True,
    )
    assert sched.run_now("audit-seal")
    done = eventually(lambda: list(sched.runs), lambda r: len(r) == 3, "three attempts")
    assert [r.status for r in done] == [503, 503, 200]
    assert [r.attempt for r in done] == [1, 2, 3]
    assert all(c["Authorization"].startswith("Bearer ey") for c in flaky.calls)
    assert not sched.run_now("no-such-job")


def test_the_controls_refuse_outside_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    sched = local_scheduler.Scheduler(
        config=schedules.load(),
        gateway="http://x",
        google_url="http://x",
        audience_base="http://x",
        scheduler_account="s@x",
        paused=True,
    )
    client = local_scheduler.create_app(sched).test_client()
    monkeypatch.delenv(clock.EMULATOR_ENV, raising=False)
    refused = client.post("/_sim/clock", json={"advanceSeconds": 60})
    assert refused.status_code == 403
    assert client.get("/_sim/jobs").status_code == 403

"""The local stack's Cloud Scheduler, and the control that moves the stack's clock.

    python -m dev.scheduler --port 8100 --gateway http://127.0.0.1:5001 \\
        --google-url http://127.0.0.1:8096 --clock-file .stack/clock.json [--paused]

It runs exactly Terraform's jobs (terraform/schedules.json, read through tools/schedules.py,
as terraform/schedule.tf reads it): each on its unix-cron schedule in the jobs' time zone, a
POST to `{gateway}/{function}{path}` with an OIDC token of the scheduler's service account
minted by the Google stand-in (dev/google_sim.py) for the audience the function checks, a
failed attempt retried as the jobs' retry_config says. One log line per attempt: the job, the
answer and the time it took.

Time is the stack's business clock (shared/platform/clock.py). When the clock is moved past
several occurrences of a job at once, the job runs once for them (as Cloud Scheduler does
after an outage: no burst of catch-up runs); the log line says how many it stood for.

Controls (local only: refused unless the emulators' settings are present):
  GET  /_sim/health
  GET  /_sim/clock                       {"now", "offsetSeconds"}
  POST /_sim/clock {"advanceSeconds": n} or {"to": "<RFC 3339>"}[, "settle": true]
       moves the clock forward (never back: 409); with settle, answers once every job due by
       the new time has run, with the runs it made
  GET  /_sim/jobs                        each job: schedule, next due, running, last run
  POST /_sim/jobs/<name>/run             run a job now (`gcloud scheduler jobs run`)
  GET  /_sim/runs                        every attempt so far, oldest first
  POST /_sim/pause | /_sim/resume        stop or restart firing on schedule (runs by hand
                                         still go); the test stacks start paused
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import flask
import requests
from croniter import croniter

from shared.platform import clock
from tools import schedules
from tools.schedules import Job, Schedules

log = logging.getLogger("alodoktor.scheduler")

TICK_SECONDS = 0.2  # how often the scheduler looks at the clock
SETTLE_SECONDS = 900.0  # the longest a settling move of the clock waits for its runs


def occurrences(job: Job, zone: str, after: datetime, through: datetime) -> list[datetime]:
    """The job's scheduled times in (after, through], in its time zone's cron reading."""
    found: list[datetime] = []
    it = croniter(job.schedule, after.astimezone(ZoneInfo(zone)))
    while True:
        moment: datetime = it.get_next(datetime)
        if moment > through:
            return found
        found.append(moment)


def next_after(job: Job, zone: str, moment: datetime) -> datetime:
    result: datetime = croniter(job.schedule, moment.astimezone(ZoneInfo(zone))).get_next(datetime)
    return result


@dataclass
class Run:
    job: str
    route: str
    due: str  # the scheduled time it ran for (the newest, when it stood for several)
    stood_for: int  # scheduled times it ran for (the clock moved past several)
    attempt: int
    status: int | None  # None: no answer (refused, timed out)
    seconds: float
    at: str  # business time the attempt started
    manual: bool = False


@dataclass
class JobState:
    job: Job
    next_due: datetime
    running: bool = False
    last: Run | None = None


@dataclass
class Scheduler:
    config: Schedules
    gateway: str
    google_url: str
    audience_base: str
    scheduler_account: str
    paused: bool = False
    states: dict[str, JobState] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        now = clock.now()
        for job in self.config.jobs:
            self.states[job.name] = JobState(job, next_after(job, self.config.time_zone, now))

    # -- firing ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Start every job that is due by the clock and not running already."""
        now = clock.now()
        with self.lock:
            if self.paused:
                return
            for state in self.states.values():
                if state.running or state.next_due > now:
                    continue
                due = occurrences(
                    state.job, self.config.time_zone, state.next_due - timedelta(seconds=1), now
                )
                state.next_due = next_after(state.job, self.config.time_zone, now)
                state.running = True
                threading.Thread(
                    target=self._run, args=(state, due[-1], len(due), False), daemon=True
                ).start()

    def run_now(self, name: str) -> bool:
        with self.lock:
            state = self.states.get(name)
            if state is None or state.running:
                return False
            state.running = True
        threading.Thread(target=self._run, args=(state, clock.now(), 1, True), daemon=True).start()
        return True

    def _run(self, state: JobState, due: datetime, stood_for: int, manual: bool) -> None:
        job, retry = state.job, self.config.retry
        try:
            for attempt in range(1, retry.count + 2):
                run = self._attempt(job, due, stood_for, attempt, manual)
                if run.status is not None and 200 <= run.status < 300:
                    return
                if attempt <= retry.count:
                    self._wait_backoff(retry.backoff(attempt))
        finally:
            with self.lock:
                state.running = False
                self.lock.notify_all()

    def _wait_backoff(self, seconds: float) -> None:
        # By the business clock, so a test that moves the clock sees the retry at once.
        until = clock.timestamp() + seconds
        while clock.timestamp() < until:
            time.sleep(TICK_SECONDS)

    def _attempt(self, job: Job, due: datetime, stood_for: int, attempt: int, manual: bool) -> Run:
        started_at = clock.now()
        started = time.monotonic()
        status: int | None = None
        try:
            token = self._token(job)
            answer = requests.post(
                f"{self.gateway}/{job.function}{job.path}",
                headers={
                    "Authorization": f"Bearer {token}",
                    "User-Agent": "Google-Cloud-Scheduler",
                },
                timeout=self.config.attempt_deadline,
            )
            status = answer.status_code
        except requests.RequestException as exc:
            log.warning("scheduler: %s: no answer: %r", job.name, exc)
        run = Run(
            job=job.name,
            route=job.route,
            due=due.isoformat(),
            stood_for=stood_for,
            attempt=attempt,
            status=status,
            seconds=round(time.monotonic() - started, 3),
            at=started_at.isoformat(),
            manual=manual,
        )
        with self.lock:
            self.runs.append(run)
            self.states[job.name].last = run
        log.info(
            "scheduler: %s %s -> %s in %.3f s (due %s%s, attempt %d)%s",
            job.name,
            job.route,
            status if status is not None else "no answer",
            run.seconds,
            run.due,
            f", standing for {stood_for}" if stood_for > 1 else "",
            attempt,
            " by hand" if manual else "",
        )
        return run

    def _token(self, job: Job) -> str:
        minted = requests.post(
            f"{self.google_url}/_sim/oidc-token",
            json={
                "email": self.scheduler_account,
                "audience": f"{self.audience_base}/{job.function}",
            },
            timeout=10,
        )
        minted.raise_for_status()
        return str(minted.json()["token"])

    # -- settling -------------------------------------------------------------------------

    def settled(self) -> bool:
        """No job due by the clock is waiting or running."""
        now = clock.now()
        with self.lock:
            return all(not s.running and s.next_due > now for s in self.states.values())

    def wait_settled(self, timeout: float = SETTLE_SECONDS) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.tick()
            if self.settled():
                return True
            with self.lock:
                self.lock.wait(TICK_SECONDS)
        return False

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "name": s.job.name,
                    "route": s.job.route,
                    "schedule": s.job.schedule,
                    "timeZone": self.config.time_zone,
                    "nextDue": s.next_due.isoformat(),
                    "running": s.running,
                    "last": asdict(s.last) if s.last else None,
                }
                for s in self.states.values()
            ]


def write_offset(path: str, offset: float) -> None:
    """Set the business clock's offset that every process of the stack follows
    (shared/platform/clock.py): a whole file renamed into place, so no reader sees half of it.
    Only this control writes it, and it is never deployed."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"offsetSeconds": offset}, f)
    os.replace(tmp, path)


def local_only() -> str | None:
    """Why the controls refuse to run here, if they do: only beside the emulators."""
    if not os.environ.get(clock.EMULATOR_ENV):
        return f"the stack's controls run only with the emulators ({clock.EMULATOR_ENV})"
    if clock.clock_file() is None:
        return f"no clock file ({clock.CLOCK_FILE_ENV})"
    return None


def create_app(scheduler: Scheduler) -> flask.Flask:
    app = flask.Flask("scheduler")
    path = clock.clock_file()

    @app.before_request
    def refuse_outside_the_stack() -> Any:
        why = local_only()
        if why:
            return {"error": why}, 403
        return None

    @app.get("/_sim/health")
    def health() -> Any:
        return {"ok": True, "paused": scheduler.paused}

    @app.get("/_sim/clock")
    def get_clock() -> Any:
        return {"now": clock.now().isoformat(), "offsetSeconds": clock.offset_seconds()}

    @app.post("/_sim/clock")
    def move_clock() -> Any:
        body = flask.request.get_json(silent=True)
        if not isinstance(body, dict):
            return {"error": 'send {"advanceSeconds": n} or {"to": "<RFC 3339>"}'}, 400
        offset = clock.offset_seconds()
        if "advanceSeconds" in body:
            step = body["advanceSeconds"]
            if not isinstance(step, int | float) or isinstance(step, bool) or step < 0:
                return {"error": "advanceSeconds is a number of seconds, 0 or more"}, 400
            new_offset = offset + float(step)
        elif isinstance(body.get("to"), str):
            try:
                target = datetime.fromisoformat(body["to"])
            except ValueError:
                return {"error": "to is an RFC 3339 date-time with its offset"}, 400
            if target.tzinfo is None:
                return {"error": "to needs its UTC offset"}, 400
            new_offset = offset + (target - clock.now()).total_seconds()
            if new_offset < offset:
                return {
                    "error": "the clock only moves forward",
                    "now": clock.now().isoformat(),
                }, 409
        else:
            return {"error": 'send {"advanceSeconds": n} or {"to": "<RFC 3339>"}'}, 400
        assert path is not None
        first_run = len(scheduler.runs)
        write_offset(path, new_offset)
        log.info(
            "clock: moved forward %.0f s, now %s", new_offset - offset, clock.now().isoformat()
        )
        answer: dict[str, Any] = {"now": clock.now().isoformat(), "offsetSeconds": new_offset}
        if body.get("settle"):
            answer["settled"] = scheduler.wait_settled()
            answer["runs"] = [asdict(r) for r in scheduler.runs[first_run:]]
        return answer

    @app.get("/_sim/jobs")
    def jobs() -> Any:
        return {"paused": scheduler.paused, "jobs": scheduler.describe()}

    @app.post("/_sim/jobs/<name>/run")
    def run_job(name: str) -> Any:
        if name not in scheduler.states:
            return {"error": f"no job {name}"}, 404
        if not scheduler.run_now(name):
            return {"error": f"{name} is running"}, 409
        return {"started": name}, 202

    @app.get("/_sim/runs")
    def runs() -> Any:
        with scheduler.lock:
            return {"runs": [asdict(r) for r in scheduler.runs]}

    @app.post("/_sim/pause")
    def pause() -> Any:
        scheduler.paused = True
        return {"paused": True}

    @app.post("/_sim/resume")
    def resume() -> Any:
        with scheduler.lock:
            # What fell due while paused is not made up for: the next times from now on.
            now = clock.now()
            for state in scheduler.states.values():
                state.next_due = next_after(state.job, scheduler.config.time_zone, now)
            scheduler.paused = False
        return {"paused": False}

    return app


def plan(scheduler: Scheduler) -> str:
    """What it runs and when, for `make dev`'s console."""
    lines = [
        f"Cloud Scheduler (local): {len(scheduler.states)} jobs, times in "
        f"{scheduler.config.time_zone}{' (paused)' if scheduler.paused else ''}"
    ]
    for item in scheduler.describe():
        lines.append(
            f"  {item['name']:20} {item['schedule']:14} {item['route']:32} next {item['nextDue']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="The local stack's Cloud Scheduler and clock.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--gateway", required=True, help="where the functions answer")
    parser.add_argument("--google-url", required=True, help="dev/google_sim.py, which signs")
    parser.add_argument("--paused", action="store_true", help="fire only when told to")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    why = local_only()
    if why:
        raise SystemExit(f"error: {why}")
    scheduler = Scheduler(
        config=schedules.load(),
        gateway=args.gateway,
        google_url=args.google_url,
        audience_base=os.environ.get("FUNCTIONS_BASE_URL", args.gateway),
        scheduler_account=os.environ["SCHEDULER_SERVICE_ACCOUNT"],
        paused=args.paused,
    )
    print(plan(scheduler), flush=True)

    def ticking() -> None:
        while True:
            scheduler.tick()
            time.sleep(TICK_SECONDS)

    threading.Thread(target=ticking, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from werkzeug.serving import run_simple

    run_simple(args.host, args.port, create_app(scheduler), threaded=True)


if __name__ == "__main__":
    main()

"""Cloud Scheduler's jobs as terraform/schedules.json declares them: the one source Terraform
(terraform/schedule.tf) makes its jobs from, and the local stack's scheduler runs.

    python -m tools.schedules        # the jobs, one line each
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEDULES = ROOT / "terraform" / "schedules.json"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def seconds(duration: str) -> float:
    """A Google API duration ("320s") in seconds."""
    found = _DURATION.match(duration)
    if found is None:
        raise ValueError(f"not a duration in seconds: {duration!r}")
    return float(found.group(1))


@dataclass(frozen=True)
class Job:
    name: str
    function: str
    path: str
    schedule: str  # unix-cron, five fields, in the schedules' time zone
    description: str

    @property
    def route(self) -> str:
        return f"POST /{self.function}{self.path}"


@dataclass(frozen=True)
class Retry:
    """Cloud Scheduler's retry_config: after a failed attempt, up to `count` more, waiting
    `min_backoff` doubled each time, at most `max_backoff`."""

    count: int
    min_backoff: float
    max_backoff: float

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...)."""
        return float(min(self.max_backoff, self.min_backoff * 2 ** (retry - 1)))


@dataclass(frozen=True)
class Schedules:
    time_zone: str
    attempt_deadline: float  # seconds a call may take before it counts as failed
    retry: Retry
    jobs: tuple[Job, ...]


def parse(doc: dict[str, Any]) -> Schedules:
    retry = doc["retry_config"]
    jobs = tuple(
        Job(name, job["function"], job["path"], job["schedule"], job["description"])
        for name, job in sorted(doc["jobs"].items())
    )
    for job in jobs:
        if len(job.schedule.split()) != 5:
            raise ValueError(f"job {job.name}: a schedule has five fields: {job.schedule!r}")
    return Schedules(
        time_zone=doc["time_zone"],
        attempt_deadline=seconds(doc["attempt_deadline"]),
        retry=Retry(
            count=int(retry["retry_count"]),
            min_backoff=seconds(retry["min_backoff_duration"]),
            max_backoff=seconds(retry["max_backoff_duration"]),
        ),
        jobs=jobs,
    )


@cache
def load(path: Path = SCHEDULES) -> Schedules:
    return parse(json.loads(path.read_text()))


def main() -> None:
    config = load()
    for job in config.jobs:
        print(f"{job.name:22} {job.schedule:15} {config.time_zone:8} {job.route}")


if __name__ == "__main__":
    main()

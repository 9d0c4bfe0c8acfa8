"""Generated blocks of hand-written pages: facts written once in code or Terraform, copied
into the page by this tool and never by hand, so the page cannot drift from them. Cloud
Scheduler's jobs (once in the README) are on the docs site's page of jobs and triggers.

    python -m tools.readme_facts          # rewrite the blocks in PAGE
    python -m tools.readme_facts --check  # exit 1 if a block differs from what this makes

A block sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`;
tests/test_readme_facts.py fails when a committed block is not what this tool makes.
tools/docs_reference.py fills the docs site's other blocks the same way (`fill`), these too.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from tools import schedules

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "schedules.md"


def scheduler_jobs() -> str:
    """Cloud Scheduler's jobs (terraform/schedules.json), each with the services the policy
    lets call its route."""
    from shared.platform.context import Service
    from shared.web import policy

    config = schedules.load()
    rows = [
        f"Cloud Scheduler calls these routes (`terraform/schedules.json`, times in "
        f"{config.time_zone}), with its service account's OIDC token; a failed call is retried "
        f"{config.retry.count} times, {config.retry.min_backoff:g} s to "
        f"{config.retry.max_backoff:g} s apart. Admins may call each by hand.",
        "",
        "| job | route | schedule (cron) | what it does |",
        "|---|---|---|---|",
    ]
    for job in config.jobs:
        rule = policy.rule_for(job.function, "POST", job.path)
        if Service.SCHEDULER not in rule.services:
            raise ValueError(f"{job.name}: the policy does not let the scheduler call {job.route}")
        rows.append(f"| `{job.name}` | `{job.route}` | `{job.schedule}` | {job.description} |")
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[], str]] = {"scheduler-jobs": scheduler_jobs}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- generated:{re.escape(name)} -->\n)(.*?)(<!-- /generated:{re.escape(name)} -->)",
        re.S,
    )


def fill(text: str, bodies: dict[str, str]) -> str:
    """`text` with each named block's body replaced; a block that is not there is an error."""
    for name, body in bodies.items():
        pattern = _block(name)
        if not pattern.search(text):
            raise ValueError(f"no generated block {name!r}")

        def put(found: re.Match[str], body: str = body) -> str:
            return found.group(1) + body + "\n" + found.group(3)

        text = pattern.sub(put, text)
    return text


def render(text: str) -> str:
    """The page with every one of this tool's blocks made anew."""
    return fill(text, {name: make() for name, make in BLOCKS.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    current = PAGE.read_text()
    made = render(current)
    where = PAGE.relative_to(ROOT)
    if args.check:
        if made != current:
            print(f"{where}'s generated blocks are stale: python -m tools.readme_facts")
            return 1
        return 0
    if made != current:
        PAGE.write_text(made)
        print(f"{where}: generated blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

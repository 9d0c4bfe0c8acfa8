"""The README's generated blocks: facts written once in code or Terraform, copied here by this
tool and never by hand, so the README cannot drift from them.

    python -m tools.readme_facts          # rewrite the blocks in README.md
    python -m tools.readme_facts --check  # exit 1 if a block differs from what this makes

A block sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`;
tests/test_readme_facts.py fails when a committed block is not what this tool makes.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from tools import schedules

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


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


def render(text: str) -> str:
    """The README with every generated block made anew."""
    for name, make in BLOCKS.items():
        pattern = _block(name)
        if not pattern.search(text):
            raise ValueError(f"README.md has no block {name!r}")
        body = make()

        def fill(found: re.Match[str], body: str = body) -> str:
            return found.group(1) + body + "\n" + found.group(3)

        text = pattern.sub(fill, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    current = README.read_text()
    made = render(current)
    if args.check:
        if made != current:
            print("README.md's generated blocks are stale: python -m tools.readme_facts")
            return 1
        return 0
    if made != current:
        README.write_text(made)
        print("README.md: generated blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The generated blocks of tools/readme_facts.py (Cloud Scheduler's jobs, on the docs site's
page of jobs and triggers since the README became short) are what it makes from the code and
Terraform, and neither the README nor any page of the docs states a schedule of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import docs_reference, readme_facts, schedules


def test_the_generated_blocks_are_current() -> None:
    current = readme_facts.PAGE.read_text()
    assert readme_facts.render(current) == current, (
        f"{readme_facts.PAGE.name}'s generated blocks are stale: run `python -m tools.readme_facts`"
    )


def test_every_scheduled_job_is_on_the_page() -> None:
    text = readme_facts.PAGE.read_text()
    for job in schedules.load().jobs:
        assert f"`{job.route}`" in text, job


def test_a_stale_block_is_found_and_made_anew() -> None:
    current = readme_facts.PAGE.read_text()
    stale = current.replace("`POST /payouts/sweep`", "`POST /payouts/hourly`", 1)
    assert stale != current
    assert readme_facts.render(stale) == current


def test_a_missing_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="scheduler-jobs"):
        readme_facts.render("# a README without its blocks\n")


@pytest.mark.parametrize(
    "page",
    [readme_facts.ROOT / "README.md", *sorted(docs_reference.DOCS.rglob("*.md"))],
    ids=lambda p: str(p.relative_to(readme_facts.ROOT)),
)
def test_no_page_states_a_frequency_of_a_scheduled_job_by_hand(page: Path) -> None:
    """Frequencies of the jobs live in terraform/schedules.json: prose that says "hourly" or
    "every 5 minutes" of a scheduled route drifts when the schedule changes."""
    text = page.read_text()
    outside = re.sub(r"<!-- generated:(\S+) -->.*?<!-- /generated:\1 -->", "", text, flags=re.S)
    routes = "|".join(re.escape(job.path.strip("/")) for job in schedules.load().jobs)
    frequency = r"(hourly|daily|weekly|every \d* ?(minutes?|hours?|days?))"
    for paragraph in outside.split("\n\n"):
        scheduled = re.search(rf"/({routes})\b", paragraph) and "Scheduler" in paragraph
        if scheduled and re.search(frequency, paragraph, re.I):
            pytest.fail(f"a schedule stated by hand beside a scheduled route:\n{paragraph}")

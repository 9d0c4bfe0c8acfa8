"""The README's generated blocks are what tools/readme_facts.py makes from the code and
Terraform, and the README states no schedule of its own beside them."""

from __future__ import annotations

import re

import pytest

from tools import readme_facts, schedules


def test_the_readmes_generated_blocks_are_current() -> None:
    current = readme_facts.README.read_text()
    assert readme_facts.render(current) == current, (
        "README.md's generated blocks are stale: run `python -m tools.readme_facts`"
    )


def test_every_scheduled_job_is_in_the_readme() -> None:
    text = readme_facts.README.read_text()
    for job in schedules.load().jobs:
        assert f"`{job.route}`" in text, job


def test_a_stale_block_is_found_and_made_anew() -> None:
    current = readme_facts.README.read_text()
    stale = current.replace("`POST /payouts/sweep`", "`POST /payouts/hourly`", 1)
    assert stale != current
    assert readme_facts.render(stale) == current


def test_a_missing_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="scheduler-jobs"):
        readme_facts.render("# a README without its blocks\n")


def test_the_readme_states_no_frequency_of_a_scheduled_job_by_hand() -> None:
    """Frequencies of the jobs live in terraform/schedules.json: prose that says "hourly" or
    "every 5 minutes" of a scheduled route drifts when the schedule changes."""
    text = readme_facts.README.read_text()
    outside = re.sub(r"<!-- generated:(\S+) -->.*?<!-- /generated:\1 -->", "", text, flags=re.S)
    routes = "|".join(re.escape(job.path.strip("/")) for job in schedules.load().jobs)
    frequency = r"(hourly|daily|weekly|every \d* ?(minutes?|hours?|days?))"
    for paragraph in outside.split("\n\n"):
        scheduled = re.search(rf"/({routes})\b", paragraph) and "Scheduler" in paragraph
        if scheduled and re.search(frequency, paragraph, re.I):
            pytest.fail(f"a schedule stated by hand beside a scheduled route:\n{paragraph}")

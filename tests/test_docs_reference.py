"""The docs site's reference is what tools/docs_reference.py makes from the code and Terraform:
a committed page that differs (a route, a setting, a job, a trigger, a notice kind or an audit
rule changed without `python -m tools.docs_reference`) fails here, so `make test` fails on a
drifted reference. And what it makes covers every fact it claims to."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import docs_reference, readme_facts, schedules


@pytest.fixture(scope="module")
def rendered() -> dict[Path, tuple[str, str]]:
    return docs_reference.render_all()


def _block(text: str, name: str) -> str:
    start = text.index(f"<!-- generated:{name} -->")
    return text[start : text.index(f"<!-- /generated:{name} -->", start)]


def _page(rendered: dict[Path, tuple[str, str]], name: str) -> str:
    return (docs_reference.DOCS / "reference" / name).read_text()


def test_the_committed_reference_is_what_the_code_makes(
    rendered: dict[Path, tuple[str, str]],
) -> None:
    stale = [str(p.relative_to(docs_reference.ROOT)) for p, (t, m) in rendered.items() if t != m]
    assert not stale, f"stale generated pages {stale}: run `python -m tools.docs_reference`"


def test_every_generator_has_its_block_on_a_page(rendered: dict[Path, tuple[str, str]]) -> None:
    placed = {name for text, _ in rendered.values() for name in docs_reference._NAME.findall(text)}
    assert placed == set(docs_reference.BLOCKS)
    assert readme_facts.PAGE in rendered


def test_a_drifted_block_is_found_and_made_anew(rendered: dict[Path, tuple[str, str]]) -> None:
    page = docs_reference.DOCS / "reference" / "routes.md"
    current, made = rendered[page]
    drifted = current.replace("`service:tasks`", "`admin`", 1)
    assert drifted != current
    block = docs_reference.BLOCKS["routes"]()
    assert readme_facts.fill(drifted, {"routes": block}) == made


def test_an_unknown_block_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "page.md").write_text("<!-- generated:nobody -->\n<!-- /generated:nobody -->\n")
    monkeypatch.setattr(docs_reference, "DOCS", tmp_path)
    with pytest.raises(ValueError, match="nobody"):
        docs_reference.render_all()


def test_every_route_of_the_policy_is_listed(rendered: dict[Path, tuple[str, str]]) -> None:
    from shared.web import policy

    block = _block(_page(rendered, "routes.md"), "routes")
    for function, method, path in policy.POLICY:
        shown = f"/{function}{path}".rstrip("/") if path != "/" else f"/{function}"
        shown = shown.replace("<", "{").replace(">", "}")
        assert f"`{method} {shown}`" in block, (function, method, path)


def test_every_setting_and_its_variables_are_listed(rendered: dict[Path, tuple[str, str]]) -> None:
    from dataclasses import fields

    from shared.platform import settings
    from tools import code_facts

    block = _block(_page(rendered, "settings.md"), "settings")
    for field in fields(settings.Settings):
        assert f"(`{field.name}`)" in block, field.name
        for name in code_facts.settings_env()[field.name]:
            assert f"`{name}`" in block, name


def test_every_job_trigger_kind_and_audited_collection_is_listed(
    rendered: dict[Path, tuple[str, str]],
) -> None:
    from dev import relay
    from shared.audit import rules as audit
    from shared.notify import rules as notify

    jobs = _page(rendered, "schedules.md")
    for job in schedules.load().jobs:
        assert f"`{job.name}` | `{job.route}`" in jobs, job
    for trigger in relay.TRIGGERS:
        assert f"`{trigger.id}`" in jobs, trigger
    notices = _page(rendered, "notices.md")
    for kind, spec in notify.KINDS.items():
        assert f"| `{kind}` |" in notices, kind
        for variable in spec.variables:
            assert f"`{variable}`" in notices, (kind, variable)
    audited = _page(rendered, "audit.md")
    for collection in audit.AUDITED_COLLECTIONS:
        assert f"| `{collection}` |" in audited, collection
    for field in audit.HEALTH_FIELDS:
        assert f"`{field}`" in audited, field


def test_views_defined_by_tests_are_no_part_of_the_reference() -> None:
    """A test's view (here one that would refuse to be planned: health data, no document id)
    defined in the same process, as the whole run's test files are, leaves the generated
    reference as it is."""
    from shared.platform.disclosure import Health
    from shared.platform.models import View

    class UnnamedForTheReference(View):
        note: Health[str | None]

    assert "UnnamedForTheReference" not in docs_reference.health_views()

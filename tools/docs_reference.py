"""The docs site's reference: facts written once in code or Terraform, copied into the pages
under docs/ by this tool and never by hand, so the site cannot drift from them.

    python -m tools.docs_reference          # rewrite the generated blocks of every page
    python -m tools.docs_reference --check  # exit 1 if a block differs from what this makes

A page is hand-written Markdown (a title, a sentence on where its facts come from) with
generated blocks between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, the pattern
of tools/readme_facts.py, whose blocks (Cloud Scheduler's jobs) are among these.
tests/test_docs_reference.py fails when a committed block is not what this makes, so
`make test` fails on a drifted reference. What each block says and where it comes from:

- `routes`: every route of every function (the merged OpenAPI document, as
  `python -m tools.openapi_doc` writes it), its callers (`x-roles`, from shared/web/policy.py),
  whether providers must be approved and whose resource it is (the policy's rule), and the
  statuses it may answer;
- `settings`, `environment`: every field of shared/platform/settings.py, the variables it is
  read from, its default (what `settings.load()` makes of an empty environment), how it is read
  (the source expression, with its bounds), what it is for (the field's comment), and which
  functions read it (tools/code_facts.py); then variables read outside the settings;
- `scheduler-jobs` (tools/readme_facts.py), `triggers`: terraform/schedules.json's jobs, and
  the Eventarc triggers dev/relay.py registers as terraform/events.tf creates them;
- `notice-kinds`: shared/notify/rules.py KINDS, with their template variables and templates;
- `audited-collections`, `health-fields`, `health-views`: shared/audit/rules.py, and the views
  that mark health data (shared/platform/disclosure.py).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import re
import sys
import tokenize
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields as dataclass_fields
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tools import readme_facts

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SETTINGS = ROOT / "shared" / "platform" / "settings.py"
TEMPLATES = ROOT / "shared" / "notify" / "templates"
METHODS = ("get", "put", "post", "patch", "delete")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table's lines."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


# --- routes -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Loading every function logs; the generated text must not depend on it."""
    import logging

    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _openapi() -> dict[str, Any]:
    from tools import openapi_doc

    with _quiet():
        return openapi_doc.document()


def _policy_path(function: str, path: str) -> str:
    """`/appointments/{id}/cancel` -> `/<id>/cancel`, as shared/web/policy.py keys it."""
    rest = path.removeprefix(f"/{function}") or "/"
    return re.sub(r"\{(\w+)\}", r"<\1>", rest)


def _legend(description: str) -> str:
    # The OpenAPI builder says "Error" of a status only a handler declares (422, 502).
    return _cell(description) if description != "Error" else "a handler's own problem"


def routes() -> str:
    from shared.platform.context import ROLES_NEEDING_APPROVAL
    from shared.web import policy

    doc = _openapi()
    by_function: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    statuses: dict[str, str] = {}
    for path, operations in doc["paths"].items():
        for method in METHODS:
            op = operations.get(method)
            if op is None:
                continue
            function = op["operationId"].split(".", 1)[0]
            by_function.setdefault(function, []).append((method.upper(), path, op))
            for status, answer in op["responses"].items():
                if not status.startswith("2"):
                    statuses.setdefault(status, answer["description"])
    out = [
        "Callers: a role (`admin`, `clinic`, `pharmacy`, `doctor`, `patient`), a Google-run "
        "service with its OIDC token (`service:scheduler`, `service:tasks`), or `public` (no "
        "credential). **Approved**: doctors, clinics and pharmacies must have been approved by "
        "an admin. **Owner**: the resource must hold the caller's uid in one of these fields "
        "(anyone else gets 404); admins pass it unless marked *not admins*. Every path is also "
        "answered under `/api/<function>` (Firebase Hosting's rewrite).",
        "",
        "Statuses a route may answer besides its success (each a `application/problem+json` "
        "body with a machine `code`):",
        "",
        *_table(
            ("status", "meaning"),
            ((f"{s} {HTTPStatus(int(s)).phrase}", _legend(statuses[s])) for s in sorted(statuses)),
        ),
        "",
    ]
    needing_approval = ROLES_NEEDING_APPROVAL
    for function in sorted(by_function):
        out += [
            f"### `{function}`",
            "",
            *_table(("route", "what", "callers", "rules", "answers"), []),
        ]
        for method, path, op in sorted(by_function[function], key=lambda r: (r[1], r[0])):
            callers = ", ".join(f"`{c}`" for c in op["x-roles"])
            notes: list[str] = []
            try:
                rule = policy.rule_for(function, method, _policy_path(function, path))
            except policy.PolicyMissing:
                rule = None  # served by the pipeline itself (GET /openapi.json)
            if rule is not None:
                if rule.approved and rule.roles & needing_approval:
                    notes.append("approved")
                if rule.owner is not None:
                    owner = ", ".join(f"`{f}`" for f in rule.owner.fields)
                    notes.append(
                        f"owner: {owner}" + ("" if rule.admin_sees_all else ", not admins")
                    )
            codes = sorted(op["responses"])
            success = ", ".join(f"**{c}**" for c in codes if c.startswith("2"))
            problems = ", ".join(c for c in codes if not c.startswith("2"))
            out.append(
                f"| `{method} {path}` | {_cell(op.get('summary') or '')} | {callers} | "
                f"{'; '.join(notes)} | {success} {problems} |"
            )
        out.append("")
    return "\n".join(out).rstrip()


# --- settings ---------------------------------------------------------------------------------


def _field_comments() -> tuple[dict[str, str], dict[str, str]]:
    """From the Settings dataclass: each field's comment (the lines just above it, or at the end
    of its line) and the section (`# -- name: ... --`) it sits in."""
    source = SETTINGS.read_text()
    tree = ast.parse(source)
    (cls,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    meaning: dict[str, str] = {}
    section: dict[str, str] = {}
    current = "Project, requests and sessions"
    previous_end = cls.lineno
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        for line in range(previous_end + 1, node.lineno):
            text = comments.get(line)
            if text is None:
                continue
            if text.startswith("--"):
                current = text.strip("- ").split(":")[0].strip()
                current = current[:1].upper() + current[1:]
                above = []
            else:
                above.append(text)
        trailing = comments.get(node.lineno)
        meaning[node.target.id] = " ".join(above + ([trailing] if trailing else []))
        section[node.target.id] = current
        previous_end = node.end_lineno or node.lineno
    return meaning, section


def _source(source: str, node: ast.AST) -> str:
    text = re.sub(r"\s+", " ", ast.get_source_segment(source, node) or "")
    return text.replace("( ", "(").replace(" )", ")").replace(", )", ")")


def _read_as() -> dict[str, tuple[str, set[str]]]:
    """Each field -> (the expression `settings.load()` computes it with, the variables named
    in it). A field set from a local of load() (`project_id=project_id`) shows that local's
    assignment, which tools/code_facts.py does not follow."""
    source = SETTINGS.read_text()
    tree = ast.parse(source)
    (load,) = (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load")
    local = {
        target.id: node.value
        for node in ast.walk(load)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(load):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Settings":
            found: dict[str, tuple[str, set[str]]] = {}
            for k in node.keywords:
                if k.arg is None:
                    continue
                value = k.value
                if isinstance(value, ast.Name) and value.id in local:
                    value = local[value.id]
                names = {
                    c.value
                    for c in ast.walk(value)
                    if isinstance(c, ast.Constant)
                    and isinstance(c.value, str)
                    and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", c.value)
                }
                found[k.arg] = (_source(source, value), names)
            return found
    raise ValueError("shared/platform/settings.py: no Settings(...) call in load()")


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return ", ".join(sorted(value)) or "none"
    if isinstance(value, tuple):
        return ", ".join(":".join(str(p) for p in item) for item in value)
    return f"`{value}`"


def _readers() -> dict[str, list[str]]:
    """Each environment variable -> the functions whose code reads it."""
    from tools import code_facts

    readers: dict[str, list[str]] = {}
    for function in code_facts.function_names():
        for name in code_facts.needs(function).env:
            readers.setdefault(name, []).append(function)
    return readers


def _functions(names: list[str], every: int) -> str:
    if not names:
        return "no function (tools, the local stack)"
    if len(names) == every:
        return "every function"
    return ", ".join(f"`{n}`" for n in sorted(names))


def settings() -> str:
    from shared.platform import settings as platform_settings
    from tools import code_facts

    with _environment({"GOOGLE_CLOUD_PROJECT": "<project>"}):
        defaults = platform_settings.load()
    env = code_facts.settings_env()
    meaning, section = _field_comments()
    read_as = _read_as()
    readers = _readers()
    every = len(code_facts.function_names())
    through_settings = {n for names in env.values() for n in names}
    loading = sorted({f for n in through_settings for f in readers.get(n, [])})
    out: list[str] = []
    current = None
    for field in dataclass_fields(platform_settings.Settings):
        if field.name not in env:
            continue  # a property of another field, not read from the environment
        if section[field.name] != current:
            current = section[field.name]
            out += [*([""] if out else []), f"### {current}", ""]
            out += _table(("setting", "default", "read as", "what", "read by"), [])
        expression, named = read_as[field.name]
        names = sorted(set(env[field.name]) | named)
        if env[field.name]:
            who = _functions(sorted({f for n in names for f in readers.get(n, [])}), every)
        else:  # read by load() itself, whatever setting a function asks for
            who = _functions(loading, every)
        variables = "<br>".join(f"`{n}`" for n in names)
        default = _shown(getattr(defaults, field.name))
        if field.name == "project_id":
            default = "(required)"
        out.append(
            f"| {variables}<br>(`{field.name}`) | {_cell(default)} | "
            f"`{_cell(expression)}` | {_cell(meaning.get(field.name, ''))} | {who} |"
        )
    return "\n".join(out).rstrip()


def environment() -> str:
    """Variables the functions read outside shared/platform/settings.py."""
    from tools import code_facts

    through_settings = {n for names in code_facts.settings_env().values() for n in names}
    readers = _readers()
    every = len(code_facts.function_names())
    outside = sorted(set(readers) - through_settings)
    if not outside:
        return "None: every variable a function reads, it reads through the settings above."
    rows = [(f"`{name}`", _functions(readers[name], every)) for name in outside]
    return "\n".join(_table(("variable", "read by"), rows))


# --- scheduled jobs and triggers --------------------------------------------------------------


def triggers() -> str:
    from dev import relay

    events = sorted(relay.TRIGGERS, key=lambda t: (t.function, t.collection))
    rows = [
        (
            f"`{t.id}`",
            f"`{t.function}`",
            f"`{t.collection}/{{document}}`",
            f"`document.v1.{t.event_type.rsplit('.', 1)[-1]}`",
        )
        for t in events
    ]
    return "\n".join(_table(("trigger", "function", "documents", "event"), rows))


# --- notices ----------------------------------------------------------------------------------


def notice_kinds() -> str:
    from shared.notify import rules as notify

    rows: list[tuple[str, ...]] = []
    for name in sorted(notify.KINDS):
        kind = notify.KINDS[name]
        variables = ", ".join(
            f"`{v}`" + (" (optional)" if v in kind.optional else "") for v in sorted(kind.variables)
        )
        templates = ", ".join(
            sorted(
                f"`{p.relative_to(TEMPLATES)}`"
                for p in TEMPLATES.glob(f"*/{name}.*")
                if p.is_file()
            )
        )
        channels = ", ".join(c.value for c in kind.channels)
        rows.append((f"`{name}`", kind.category.value, channels, variables, templates))
    categories = [
        (
            c.value,
            "yes" if c in notify.IGNORES_OPT_OUT else "no",
            "yes" if c in notify.IGNORES_QUIET_HOURS else "no",
        )
        for c in notify.Category
    ]
    return "\n".join(
        [
            *_table(("kind", "category", "channels", "template variables", "templates"), rows),
            "",
            *_table(("category", "ignores opt-outs", "ignores quiet hours"), categories),
        ]
    )


# --- audit ------------------------------------------------------------------------------------


def audited_collections() -> str:
    from shared.audit import rules as audit

    def listed(names: Iterable[str]) -> str:
        return ", ".join(f"`{f}`" for f in sorted(names))

    rows = [
        (
            f"`{name}`",
            listed(audit.UNAUDITED_FIELDS.get(name, ())),
            listed(audit.SECRET_FIELDS.get(name, ())),
        )
        for name in sorted(audit.AUDITED_COLLECTIONS)
    ]
    columns = ("collection", "fields not audited", "kept as keyed hashes (secrets)")
    return "\n".join(_table(columns, rows))


def health_fields() -> str:
    from shared.audit import rules as audit

    return (
        "Health fields, in every collection: "
        + ", ".join(f"`{f}`" for f in sorted(audit.HEALTH_FIELDS))
        + "."
    )


def _views() -> list[type[BaseModel]]:
    """Every view class of every function (each function loaded as the gateway loads it)."""
    from shared.platform.models import View

    with _quiet():
        _openapi()  # imports every function, so every view is defined
    found: dict[str, type[BaseModel]] = {}
    stack: list[type[BaseModel]] = [View]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            # The product's views only: a test module's views (defined in the same process
            # when the reference is checked in a test run) are no part of the reference.
            if sub.__module__ == "main" or sub.__module__.startswith("shared."):
                found.setdefault(f"{sub.__module__}.{sub.__qualname__}", sub)
            stack.append(sub)
    return [found[k] for k in sorted(found)]


def _defined_in(view: type[BaseModel]) -> str:
    """Where a view's class statement is: its module, or for a function's main.py (each is
    loaded as `main`) the main.py files that define a class of that name."""
    if view.__module__ != "main":
        return f"`{view.__module__}`"
    found = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "functions").glob("*/main.py"))
        if any(
            isinstance(node, ast.ClassDef) and node.name == view.__name__
            for node in ast.parse(path.read_text()).body
        )
    ]
    return ", ".join(f"`{f}`" for f in found)


def health_views() -> str:
    from shared.platform import disclosure

    rows = [
        (
            f"`{view.__qualname__}`",
            _defined_in(view),
            f"`{plan.collection}/{{{plan.id_field}}}`",
            ", ".join(f"`{f}`" for f in plan.health),
        )
        for view, plan in ((v, disclosure.plan(v)) for v in _views())
        if plan.health
    ]
    return "\n".join(_table(("view", "defined in", "document", "health fields"), rows))


# --- the pages --------------------------------------------------------------------------------

BLOCKS: dict[str, Callable[[], str]] = {
    **readme_facts.BLOCKS,
    "routes": routes,
    "settings": settings,
    "environment": environment,
    "triggers": triggers,
    "notice-kinds": notice_kinds,
    "audited-collections": audited_collections,
    "health-fields": health_fields,
    "health-views": health_views,
}
_NAME = re.compile(r"<!-- generated:([\w-]+) -->")


def pages() -> list[Path]:
    """Every page with a generated block: the docs' Markdown, and the README."""
    found = [p for p in sorted(DOCS.rglob("*.md")) if _NAME.search(p.read_text())]
    readme = ROOT / "README.md"
    return found + ([readme] if _NAME.search(readme.read_text()) else [])


def _where(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def render_all() -> dict[Path, tuple[str, str]]:
    """Each page -> (its text, its text with every block made anew). Every block of BLOCKS is
    on some page; a page naming a block nobody makes is an error."""
    made: dict[str, str] = {}
    placed: set[str] = set()
    result: dict[Path, tuple[str, str]] = {}
    for page in pages():
        text = page.read_text()
        names = set(_NAME.findall(text))
        unknown = names - set(BLOCKS)
        if unknown:
            raise ValueError(f"{_where(page)}: no generator for {sorted(unknown)}")
        for name in names - set(made):
            made[name] = BLOCKS[name]()
        placed |= names
        result[page] = (text, readme_facts.fill(text, {n: made[n] for n in names}))
    missing = set(BLOCKS) - placed
    if missing:
        raise ValueError(f"no page under docs/ holds the generated blocks {sorted(missing)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    stale = {page: made for page, (text, made) in render_all().items() if text != made}
    if args.check:
        for page in stale:
            print(f"{_where(page)}: generated blocks are stale")
        if stale:
            print("run: python -m tools.docs_reference")
        return 1 if stale else 0
    for page, made in stale.items():
        page.write_text(made)
        print(f"{_where(page)}: generated blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

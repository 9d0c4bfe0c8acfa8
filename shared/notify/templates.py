"""Notice templates: per kind and locale, rendered with Jinja2.

`templates/<locale>/<kind>.txt` holds the plain-text blocks (`subject`, `text`, `sms`,
`push_title`, `push_body`); `templates/<locale>/<kind>.html` the HTML e-mail, which extends
that locale's `_layout.html`. HTML is autoescaped, text is not (it is never read as markup);
a variable a template uses that the context lacks raises (StrictUndefined) instead of
rendering empty. A locale without a template for a kind falls back to English.

A mail that can be unsubscribed from carries the link in both parts: the HTML layout's
footer, and `<locale>/_unsubscribe.txt` after the text. `<locale>/_<name>_page.html` are the
pages a person opens from a mail (`page`), answered by the notifications function.

A template sees only its kind's declared variables (shared/notify/rules.py `KINDS`) plus
COMMON, never the notice's whole data: tests/test_notify_templates.py walks every template's
variables against the audit log's health fields.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.notify.rules import DEFAULT_LOCALE, KINDS, Kind

TEMPLATES = Path(__file__).resolve().parent / "templates"
BLOCKS = ("subject", "text", "sms", "push_title", "push_body")
# What every template may use besides its kind's variables.
COMMON = frozenset({"name", "app", "unsubscribe_url", "when"})
APP_NAME = "Alo Doktor"

_FORMATS = {
    "en": "%d %b %Y, %H:%M",
    "tr": "%d.%m.%Y %H:%M",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    sms: str
    push_title: str
    push_body: str


class UnknownKind(LookupError):
    pass


@functools.cache
def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    return env


def template_names(kind: str, locale: str) -> tuple[str, str]:
    """The (text, html) template names for a kind in a locale, English when it has none."""
    chosen = locale if (TEMPLATES / locale / f"{kind}.txt").is_file() else DEFAULT_LOCALE
    return f"{chosen}/{kind}.txt", f"{chosen}/{kind}.html"


def context_for(
    kind: Kind, data: Mapping[str, Any], *, name: str, unsubscribe_url: str | None
) -> dict[str, Any]:
    """What a template of this kind sees: its declared variables only, from the notice data."""
    context = {key: data.get(key) for key in kind.optional}
    context.update({key: data[key] for key in kind.variables if key in data})
    context.update(name=name, app=APP_NAME, unsubscribe_url=unsubscribe_url)
    return context


def render(
    kind_name: str,
    locale: str,
    data: Mapping[str, Any],
    *,
    name: str,
    time_zone: str = "UTC",
    unsubscribe_url: str | None = None,
) -> Rendered:
    """Every part of a notice for one recipient."""
    kind = KINDS.get(kind_name)
    if kind is None:
        raise UnknownKind(kind_name)
    env = environment()
    text_name, html_name = template_names(kind_name, locale)
    lang = text_name.split("/")[0]
    context = context_for(kind, data, name=name, unsubscribe_url=unsubscribe_url)
    context["when"] = functools.partial(_when, zone=time_zone, lang=lang)
    text_template = env.get_template(text_name)
    blocks = {}
    for block in BLOCKS:
        render_block = text_template.blocks[block]
        blocks[block] = "".join(render_block(text_template.new_context(context))).strip()
    html = env.get_template(html_name).render(context)
    text = blocks["text"] + "\n"
    if unsubscribe_url:
        footer = env.get_template(f"{lang}/_unsubscribe.txt").render(
            unsubscribe_url=unsubscribe_url
        )
        text += f"\n-- \n{footer.strip()}\n"
    return Rendered(
        subject=" ".join(blocks["subject"].split()),  # one header line, whatever a name held
        text=text,
        html=html,
        sms=" ".join(blocks["sms"].split()),
        push_title=" ".join(blocks["push_title"].split()),
        push_body=" ".join(blocks["push_body"].split()),
    )


def page(name: str, locale: str, **context: Any) -> str:
    """One of the pages a person opens from a mail, in `locale` (English when it has none)."""
    chosen = locale if (TEMPLATES / locale / f"_{name}_page.html").is_file() else DEFAULT_LOCALE
    rendered: str = (
        environment().get_template(f"{chosen}/_{name}_page.html").render(app=APP_NAME, **context)
    )
    return rendered


def _when(moment: Any, *, zone: str, lang: str) -> str:
    """A moment in the recipient's zone and their locale's format."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if not isinstance(moment, datetime):
        return str(moment)
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local.strftime(_FORMATS.get(lang, _FORMATS['en']))} ({zone})"

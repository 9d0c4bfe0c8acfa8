"""Reading stored records defensively.

Requests validate what they store, but Firestore holds whatever was written: data older than a
rule, or a hand edit in the console. A record that no longer parses must cost its own readers a
clear answer, not every caller a 500: `reading` turns the parse errors of one record into
`UnreadableRecord` (409 `record_unreadable`) and logs which record, so it can be repaired; list
routes use `readable` to leave such a record out of a page instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from shared.platform import logs
from shared.platform.errors import UnreadableRecord

log = logs.get("alodoktor.stored")

# What parsing a stored value raises: ValueError (pydantic's ValidationError is one, so is a
# date that is not a day), KeyError/LookupError (a field missing, an unknown time zone),
# TypeError (a value of the wrong type).
PARSE_ERRORS = (ValueError, LookupError, TypeError)

T = TypeVar("T")
V = TypeVar("V")


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Parse the stored record `what` (e.g. "availability/<uid>") inside this block."""
    try:
        yield
    except UnreadableRecord:
        raise
    except PARSE_ERRORS as exc:
        log.error("stored record %s does not parse: %s", what, str(exc)[:500])
        raise UnreadableRecord(
            "This record's stored data could not be read; it has been reported.", record=what
        ) from None


def readable(build: Callable[[T], V], items: Iterable[T]) -> list[V]:
    """`build` each item; one that raises UnreadableRecord (logged where it was raised) is left
    out, so one bad record does not take a whole page down with it."""
    built: list[V] = []
    for item in items:
        try:
            built.append(build(item))
        except UnreadableRecord:
            continue
    return built

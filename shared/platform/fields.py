"""The value types every request model uses for ids, integers, dates, date-times and currencies.

A request field that holds one of these is declared with the type here, never as a bare `str`
or `date`: tests/test_request_models.py walks every request model of every function and fails
on one that does not. So whatever a client sends, wherever in the body (nested, in lists), is
refused with a 400 before it can reach Firestore, and nothing is stored that a later read
cannot parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from shared.platform.ids import DOC_ID_PATTERN
from shared.platform.money import EXPONENTS


@dataclass(frozen=True)
class Kind:
    """Marks a field's type as one of these, for the walk of tests/test_request_models.py."""

    name: str


# Dates far from now are never meaningful here, and year-9999 arithmetic overflows.
MIN_YEAR, MAX_YEAR = 2000, 2099


DocId = Annotated[
    str,
    Field(
        pattern=DOC_ID_PATTERN,
        min_length=1,
        max_length=256,
        description="a document id: letters, digits, '_', '.', '-'; begins with a letter or digit",
    ),
    Kind("doc_id"),
]


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _real_date(value: Any) -> Any:
    # Only the ISO calendar form (pydantic alone would also take a number of seconds), and
    # only real days: 2030-02-30 or 0000-01-01 is refused here, never stored.
    if isinstance(value, str):
        if not _ISO_DATE.fullmatch(value):
            raise ValueError("not a calendar date (YYYY-MM-DD)")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value} is not a day of the calendar") from None
    return value


def _in_range(value: date) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"dates are between {MIN_YEAR} and {MAX_YEAR}")
    return value


def _aware_in_range(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a date-time needs its UTC offset (e.g. 2030-01-07T09:00:00+07:00)")
    # The local year first: converting year 9999 (or 1) to UTC could overflow.
    if (
        not MIN_YEAR <= value.year <= MAX_YEAR
        or not MIN_YEAR <= value.astimezone(UTC).year <= MAX_YEAR
    ):
        raise ValueError(f"dates are between {MIN_YEAR} and {MAX_YEAR}")
    return value


Day = Annotated[
    date,
    BeforeValidator(_real_date),
    AfterValidator(_in_range),
    Field(description=f"a calendar date, YYYY-MM-DD, years {MIN_YEAR}-{MAX_YEAR}"),
    Kind("day"),
]

Instant = Annotated[
    datetime,
    AfterValidator(_aware_in_range),
    Field(description=f"an RFC 3339 date-time with its offset, years {MIN_YEAR}-{MAX_YEAR}"),
    Kind("instant"),
]

# Firestore stores integers as signed 64 bits: a larger one cannot be written, and a query that
# compares with one fails inside the client library (a 500 before these types existed).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Int = Annotated[int, Kind("int")]
"""An integer a request carries (a page size, a cursor, a sequence or chunk number, a count,
minor units). Declared as `name: Int = Field(ge=..., le=...)`: both bounds, within int64 and
within the real range of what it counts, so a value past them is a 400 before any handler runs
(tests/test_request_models.py fails on an int declared any other way)."""


CURRENCY_PATTERN = "^(" + "|".join(sorted(EXPONENTS)) + ")$"

Currency = Annotated[
    str,
    Field(
        pattern=CURRENCY_PATTERN,
        description="an ISO 4217 code of a currency the platform prices in",
        json_schema_extra={"enum": sorted(EXPONENTS)},
    ),
    Kind("currency"),
]

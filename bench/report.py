"""The arithmetic and the tables of the benchmarks: pure, so tests/test_bench.py checks them."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0 < p <= 100) by nearest rank: always one of the values measured,
    never an interpolation between two, so p99 of 200 samples is the second-largest."""
    if not values:
        raise ValueError("no values")
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def ratio(value: float, baseline: float) -> float:
    """value / baseline, rounded as the tables show it; a baseline of zero is an error."""
    if baseline <= 0:
        raise ValueError("the baseline must be positive")
    return round(value / baseline, 3)


def within(value_ratio: float, target: float) -> bool:
    return value_ratio <= target


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A plain-text table: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, not {len(headers)}")
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


@dataclass
class Progress:
    """One line on stderr per step of a long run, with the time since the start (a progress
    line for a person watching, never a measurement)."""

    enabled: bool = True
    started: float = field(default_factory=time.monotonic)

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, object]:
    """What the figures were measured on: they mean little without how busy the machine was
    (the 1-minute load average, against the number of cores)."""
    import os
    import platform

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def machine_line(before: dict[str, object], after: dict[str, object]) -> str:
    return (
        f"machine: {before['cpus']} CPUs, Python {before['python']}, load average "
        f"{before['loadavg_1m']} at the start, {after['loadavg_1m']} at the end"
    )

"""Business time: the one clock every rule of the product reads (when a hold expires, a visit
starts, a payout is due, a session ends, a notice may be sent).

In production it is the system clock and cannot be moved. On the local stack a test control
(the clock control of dev/scheduler.py, never deployed) moves it forward, so a week of the
marketplace can be lived in minutes: it writes the offset into the file named by
`ALODOKTOR_CLOCK_FILE`, which every process of the stack reads here. The file is honoured only
where the emulators' settings are present (`FIRESTORE_EMULATOR_HOST`): a deployed function
never reads it, whatever its environment says (tests/test_clock.py, over the bundle too).

What does not move: Firestore's own server timestamps (`_meta.at` on every write,
`writtenAt` on audit entries, read and update times), the emulators' token times, and the audit
sealer's lag, which compares server times with server times only. No rule compares one of
those with this clock.

Durations (timeouts, latency, backoff within one request) use `time.monotonic()`, not this.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

CLOCK_FILE_ENV = "ALODOKTOR_CLOCK_FILE"
EMULATOR_ENV = "FIRESTORE_EMULATOR_HOST"

# (the file's identity when last read, its offset): one stat per reading of the clock.
_cache: tuple[tuple[int, int, int], float] | None = None


def clock_file() -> str | None:
    """The offset file this process follows; None in production (no emulators)."""
    if not os.environ.get(EMULATOR_ENV):
        return None
    return os.environ.get(CLOCK_FILE_ENV) or None


def offset_seconds() -> float:
    """How far the local clock has been moved forward (0 in production)."""
    global _cache
    path = clock_file()
    if path is None:
        return 0.0
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return 0.0
    identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if _cache is not None and _cache[0] == identity:
        return _cache[1]
    try:
        with open(path, encoding="utf-8") as f:
            offset = float(json.load(f)["offsetSeconds"])
    except (OSError, ValueError, KeyError, TypeError):
        # Being replaced this very moment (the writer renames a whole file into place):
        # keep the last offset read rather than jump back.
        return _cache[1] if _cache is not None else 0.0
    _cache = (identity, offset)
    return offset


def now() -> datetime:
    """The current business time, aware, in UTC."""
    return datetime.now(UTC) + timedelta(seconds=offset_seconds())


def timestamp() -> float:
    """The current business time in seconds since the epoch."""
    return time.time() + offset_seconds()


def real_now() -> datetime:
    """The machine's own clock, never moved: only to compare with times made outside the
    product that do not move either (a token's `iat`, `exp` and `auth_time`, Firestore's
    server timestamps)."""
    return datetime.now(UTC)


def real_timestamp() -> float:
    """real_now() in seconds since the epoch."""
    return time.time()

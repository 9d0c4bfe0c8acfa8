"""Stops a stack's processes when its owner dies without stopping them (e.g. SIGKILL).

The stack writes each child's process group id to a file; this process polls the owner's pid
and, once it is gone, kills every listed group. Killing the gcloud wrapper alone would leave
the Firestore emulator's JVM running, so whole groups are killed.

    python -m dev.reaper <owner-pid> <pgid-file>
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(pgid_file: Path) -> None:
    if not pgid_file.exists():
        return
    for line in pgid_file.read_text().split():
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(line), signal.SIGKILL)


def main() -> int:
    owner, pgid_file = int(sys.argv[1]), Path(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner's Ctrl-C is the owner's to handle
    while alive(owner) and os.getppid() == owner:
        time.sleep(1)
    reap(pgid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Verify the audit log's hash chain of whatever project the environment points at.

    python -m tools.audit_verify [--project ID] [--json]

With FIRESTORE_EMULATOR_HOST set (as `make dev` sets it) the emulator, otherwise the project in
GOOGLE_CLOUD_PROJECT with application default credentials. Exit status 0 when the chain is
whole, 1 when it breaks (the first entry that does not fit is reported), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shared.audit import service as audit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.audit_verify",
        description="Verify the audit log's hash chain.",
    )
    parser.add_argument("--project", help="project id (default: GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    args = parser.parse_args(argv)
    if args.project:
        os.environ["GOOGLE_CLOUD_PROJECT"] = args.project
    if not (os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")):
        print("audit_verify: error: set GOOGLE_CLOUD_PROJECT or pass --project", file=sys.stderr)
        return 2
    verdict = audit.verify_chain()
    if args.json:
        print(json.dumps(verdict.as_dict()))
    elif verdict.ok:
        print(f"ok: {verdict.count} entries, chain unbroken")
    else:
        where = f"entry {verdict.broken_at}" if verdict.broken_at is not None else "the head"
        ident = f" ({verdict.entry_id})" if verdict.entry_id else ""
        print(
            f"BROKEN at {where}{ident}: {verdict.reason}; "
            f"{verdict.count} entries verified before it"
        )
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Write what terraform/ must take from the code into terraform/generated/code.json.

    python -m tools.terraform_inputs           # rewrite the file
    python -m tools.terraform_inputs --check   # exit 1 if the file is not what the code says

Terraform cannot run Python, and a list copied by hand drifts. So the lists Terraform needs
from the code are generated from the very objects the code uses, and tests/test_terraform.py
fails when the committed file is stale:

- `audited_collections`: shared.audit.rules.AUDITED_COLLECTIONS, one Eventarc trigger each;
- `outbox_collection`: shared.platform.outbox.NOTIFICATIONS, the collection `notify` follows;
- `firestore_indexes` and `firestore_fields` (TTL policies, single-field settings): every
  entry of firestore.indexes.json, under a stable key (an index cannot change in place, so
  a changed index is a new key: created, and the old one deleted);
- `function_permissions`: for each function whose code calls Firebase Auth or sends FCM push,
  the IAM permissions those calls need (tools.code_facts), which become that function's own
  custom role (terraform/functions.tf): nothing more than the code calls.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INDEXES = ROOT / "firestore.indexes.json"
OUTPUT = ROOT / "terraform" / "generated" / "code.json"


_MODES = {"ASCENDING": "asc", "DESCENDING": "desc", "CONTAINS": "contains"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _field(field: dict[str, Any]) -> dict[str, Any]:
    return {
        "field_path": field["fieldPath"],
        "order": field.get("order"),
        "array_config": field.get("arrayConfig"),
    }


def index_key(index: dict[str, Any]) -> str:
    """`sessions__revoked_asc__uid_asc__expiresAt_desc` (and `__group` for collection groups)."""
    parts = [_slug(index["collectionGroup"])]
    for f in index["fields"]:
        mode = f.get("order") or f.get("arrayConfig") or ""
        parts.append(f"{_slug(f['fieldPath'])}_{_MODES.get(mode, _slug(mode).lower())}")
    if index.get("queryScope", "COLLECTION") != "COLLECTION":
        parts.append(index["queryScope"].lower())
    return "__".join(parts)


def generate() -> dict[str, Any]:
    from shared.audit.rules import AUDITED_COLLECTIONS
    from shared.platform.outbox import NOTIFICATIONS
    from tools import code_facts

    spec = json.loads(INDEXES.read_text())
    indexes: dict[str, Any] = {}
    for index in spec.get("indexes", []):
        key = index_key(index)
        if key in indexes:
            raise ValueError(f"firestore.indexes.json lists the same index twice: {key}")
        indexes[key] = {
            "collection": index["collectionGroup"],
            "query_scope": index.get("queryScope", "COLLECTION"),
            "fields": [_field(f) for f in index["fields"]],
        }
    fields: dict[str, Any] = {}
    for override in spec.get("fieldOverrides", []):
        key = f"{_slug(override['collectionGroup'])}__{_slug(override['fieldPath'])}"
        fields[key] = {
            "collection": override["collectionGroup"],
            "field": override["fieldPath"],
            "ttl": bool(override.get("ttl", False)),
            "indexes": [
                {
                    "query_scope": i.get("queryScope", "COLLECTION"),
                    "order": i.get("order"),
                    "array_config": i.get("arrayConfig"),
                }
                for i in override.get("indexes", [])
            ],
        }
    return {
        "_generated_by": "python -m tools.terraform_inputs (do not edit by hand)",
        "audited_collections": sorted(AUDITED_COLLECTIONS),
        "outbox_collection": NOTIFICATIONS,
        "firestore_indexes": dict(sorted(indexes.items())),
        "firestore_fields": dict(sorted(fields.items())),
        "function_permissions": {
            name: needs.permissions
            for name in code_facts.function_names()
            if (needs := code_facts.needs(name)).permissions
        },
    }


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.terraform_inputs",
        description="Generate terraform/generated/code.json from the code.",
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    text = render()
    current = OUTPUT.read_text() if OUTPUT.exists() else ""
    if args.check:
        if current != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is stale: run `python -m tools.terraform_inputs`",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(OUTPUT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Verify the audit log: in Firestore, in an export, or one inclusion proof.

    python -m tools.audit_verify [--project ID] [--json] [--public-key KEY ...]
    python -m tools.audit_verify --export DIR [--json] [--public-key KEY ...]
    python -m tools.audit_verify --proof FILE [--json] [--public-key KEY ...]
    python -m tools.audit_verify --print-public-key

- Firestore (with FIRESTORE_EMULATOR_HOST set, as `make dev` sets it, the emulator; otherwise
  the project in GOOGLE_CLOUD_PROJECT with application default credentials): the chain of
  checkpoints, then every sealed range chunk by chunk, a bounded batch at a time. Entries'
  macs are checked when AUDIT_HASH_KEY is set; without it the Merkle roots alone decide.
- `--export DIR`: a copy of the export (`gcloud storage cp -r gs://<bucket>/<prefix> DIR`),
  verified from its files alone, offline.
- `--proof FILE`: an entry's inclusion proof as GET /audit/entries/<id>/proof answers it,
  verified with the checkpoint it carries, offline.

Signatures are checked against the public keys given with --public-key (base64 of the raw
Ed25519 key, as --print-public-key prints it from AUDIT_SIGNING_KEY), else those of
AUDIT_SIGNING_KEY, else (an export) the export's own keys/ files, which proves the files are
whole but not who signed them: pin the keys. A key is base64 or hex of its 32 raw bytes, or
its JWK (GET /audit/keys gives all three forms).

Entries flagged when they were sealed (edited or invented before the seal) verify as part of
their range, but the log is not clean while one is not acknowledged (POST
/audit/checkpoints/<n>/flagged/<entry id>/acknowledge; in an export, the acknowledgement's own
audit entry): the verdict lists them every time. Exit status 0 when everything verifies and
nothing flagged is unresolved, 1 at the first thing that does not verify (printed), 2 on a
usage error, 3 when everything verifies but flagged entries are unresolved (listed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from shared.audit import signing


def _public_keys(args: argparse.Namespace) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for text in args.public_key or []:
        key_id, public = signing.parse_public_key(text)
        keys[key_id] = public
    if not keys and os.environ.get("AUDIT_SIGNING_KEY"):
        keys = signing.SigningKeys.parse(os.environ["AUDIT_SIGNING_KEY"]).public_keys()
    return keys


UNRESOLVED = 3


def _report(result: dict[str, Any], as_json: bool) -> int:
    clean = result.get("clean", result["ok"])
    if as_json:
        print(json.dumps(result, default=str))
    elif result["ok"]:
        print(f"ok: {result['summary']}")
        flagged = result.get("flagged") or {}
        if flagged.get("count"):
            print(
                f"{'NOT CLEAN' if not clean else 'clean'}: {flagged['count']} entries flagged "
                f"when sealed, {flagged['unresolved']} unresolved"
            )
            for flag in flagged["listed"]:
                what = flag["acknowledgement"]
                state = (
                    f"acknowledged by {what['by']} at {what['at']}: {what['note']}"
                    if what
                    else "UNRESOLVED"
                )
                print(
                    f"  checkpoint {flag['checkpoint']}, entry {flag['entryId']}: "
                    f"{flag['reason']}; {state}"
                )
    else:
        print(f"BROKEN at {result['brokenAt']}: {result['reason']}; {result['summary']}")
    if not result["ok"]:
        return 1
    return 0 if clean else UNRESOLVED


def verify_firestore(public_keys: dict[str, bytes]) -> dict[str, Any]:
    from shared.audit import checkpoints as cps
    from shared.audit import findings, proofs, sealing
    from shared.audit import rules as audit_log
    from shared.audit import service as entries

    hash_keys = entries.hash_keys() if os.environ.get("AUDIT_HASH_KEY") else None
    first, previous = 1, None
    checked = counted = 0
    with_flags: list[dict[str, Any]] = []
    while True:
        batch = proofs.checkpoints_from(first, proofs.CHAIN_BATCH)
        verdict = cps.verify_chain(batch, previous, public_keys)
        for checkpoint in batch[: verdict.checked]:
            total = len(checkpoint["chunks"])
            for first_chunk in range(0, total, proofs.RANGE_BATCH):
                results = proofs.verify_chunks(
                    checkpoint, first_chunk, proofs.RANGE_BATCH, hash_keys
                )
                broken = next((f for _, f in results if f), None)
                if broken:
                    where = f"checkpoint {checkpoint['n']}, entry {broken.position}" + (
                        f" ({broken.entry_id})" if broken.entry_id else ""
                    )
                    return _broken(where, broken.reason, checked, counted)
            checked += 1
            counted += int(checkpoint["count"])
            previous = checkpoint
            if checkpoint.get("flagged"):
                with_flags.append(checkpoint)
        if not verdict.ok:
            return _broken(f"checkpoint {verdict.broken_at}", verdict.reason, checked, counted)
        if len(batch) < proofs.CHAIN_BATCH:
            break
        first += len(batch)
    unsealed = ""
    if checked == 0:
        head = sealing.legacy_head()
        if head is not None:
            legacy = audit_log.verify_chain(
                sealing.legacy_rows(0, int(head.get("seq", 0))), through=int(head["seq"])
            )
            if not legacy.ok:
                where = f"legacy entry {legacy.broken_at}" + (
                    f" ({legacy.entry_id})" if legacy.entry_id else ""
                )
                return _broken(where, legacy.reason, 0, legacy.count)
            unsealed = f"; the legacy chain of {legacy.count} entries is whole, not sealed yet"
    waiting = findings.unsealed()
    flagged = findings.summarize(with_flags)
    summary = f"{checked} checkpoints, {counted} entries verified{unsealed}; {waiting.words()}"
    return {
        "ok": True,
        "clean": flagged.clean,
        "checkpoints": checked,
        "entries": counted,
        "flagged": flagged.as_dict(),
        "unsealed": waiting.as_dict(),
        "summary": summary,
    }


def _broken(where: str, reason: str | None, checked: int, counted: int) -> dict[str, Any]:
    return {
        "ok": False,
        "brokenAt": where,
        "reason": reason,
        "checkpoints": checked,
        "entries": counted,
        "summary": f"{checked} checkpoints and {counted} entries verified before it",
    }


def verify_export(root: Path, public_keys: dict[str, bytes]) -> dict[str, Any]:
    from shared.audit import export

    note = ""
    if not public_keys:
        public_keys = export.exported_keys(root)
        note = " (signatures checked against the export's own keys/: pin them with --public-key)"
    verdict = export.verify_directory(root, public_keys)
    if not verdict.ok:
        return _broken(
            verdict.broken_at or "?", verdict.reason, verdict.checkpoints, verdict.entries
        )
    summary = f"{verdict.checkpoints} checkpoints, {verdict.entries} entries verified{note}"
    return {
        "ok": True,
        "clean": verdict.flagged.clean,
        "checkpoints": verdict.checkpoints,
        "entries": verdict.entries,
        "flagged": verdict.flagged.as_dict(),
        "summary": summary,
    }


def verify_proof(path: Path, public_keys: dict[str, bytes]) -> dict[str, Any]:
    from shared.audit import checkpoints as cps

    proof = json.loads(path.read_text())
    why = cps.proof_problem(proof, public_keys)
    n = (proof.get("checkpoint") or {}).get("n")
    if why:
        return {
            "ok": False,
            "brokenAt": f"entry {proof.get('entryId')}",
            "reason": why,
            "summary": f"checkpoint {n}",
        }
    summary = f"entry {proof['entryId']} is entry {proof['index']} of checkpoint {n}"
    return {"ok": True, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.audit_verify",
        description="Verify the audit log, an export of it, or one inclusion proof.",
    )
    parser.add_argument("--project", help="project id (default: GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--export", type=Path, help="verify an exported directory, offline")
    parser.add_argument("--proof", type=Path, help="verify an inclusion proof (JSON), offline")
    parser.add_argument(
        "--public-key",
        action="append",
        help="a signing key to trust (base64, hex or JWK; repeatable)",
    )
    parser.add_argument(
        "--print-public-key", action="store_true", help="print AUDIT_SIGNING_KEY's public keys"
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    args = parser.parse_args(argv)
    try:
        public_keys = _public_keys(args)
    except ValueError as exc:
        print(f"audit_verify: error: --public-key: {exc}", file=sys.stderr)
        return 2
    if args.print_public_key:
        if not public_keys:
            print("audit_verify: error: AUDIT_SIGNING_KEY is not set", file=sys.stderr)
            return 2
        for key_id, public in public_keys.items():
            print(f"{key_id} {signing.encode_public_key(public)}")
        return 0
    if args.export is not None:
        if not (args.export / "checkpoints").is_dir():
            print(f"audit_verify: error: {args.export} holds no export", file=sys.stderr)
            return 2
        return _report(verify_export(args.export, public_keys), args.json)
    if args.proof is not None:
        if not public_keys:
            print("audit_verify: error: give --public-key (or AUDIT_SIGNING_KEY)", file=sys.stderr)
            return 2
        return _report(verify_proof(args.proof, public_keys), args.json)
    if args.project:
        os.environ["GOOGLE_CLOUD_PROJECT"] = args.project
    if not (os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")):
        print("audit_verify: error: set GOOGLE_CLOUD_PROJECT or pass --project", file=sys.stderr)
        return 2
    if not public_keys:
        print("audit_verify: error: give --public-key (or AUDIT_SIGNING_KEY)", file=sys.stderr)
        return 2
    return _report(verify_firestore(public_keys), args.json)


if __name__ == "__main__":
    sys.exit(main())

"""Export of sealed ranges, with their checkpoints, as JSON lines, and their offline verification.

Under the export's location (AUDIT_EXPORT_URL: `gs://bucket/prefix` in production, whose
bucket keeps every object for its retention period; a local directory for `make dev` and
the tests):

    entries/{n}.jsonl     checkpoint n's entries in range order, one per line; each line is
                          exactly the bytes of the entry's Merkle leaf (its canonical JSON)
    checkpoints/{n}.json  checkpoint n, canonical JSON, with its hash and signature
    keys/{keyId}.json     {"keyId", "algorithm": "ed25519", "publicKey": base64} of each
                          signing key the checkpoints name
    keys/{keyId}.jwk.json the same key as a JWK (RFC 8037: kty OKP, crv Ed25519, kid)

(n zero-padded to 12 digits.) Every object is created once and never replaced: the storage
port only creates. An entries file goes before its checkpoint, so a checkpoint's object means
its entries are all there. Before writing, each range is verified as the scheduled check
would (a range that does not verify is alerted on, not exported); an object already there
(an earlier run stopped half-way) must hold exactly what would be written, or that too is
alerted on: the bucket keeps what the log said then.

`verify_directory` checks such a directory with nothing else: each file in canonical form,
each checkpoint's hash, signature and link to the one before, each range's leaves against
its chunk roots and root, in order (`python -m tools.audit_verify --export DIR`). It also
reports the entries the checkpoints flagged when sealed, each acknowledged or not by the
acknowledgement's own audit entry found among the exported entries.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from shared.audit import alerts, findings, proofs, sealing, signing
from shared.audit import checkpoints as cps
from shared.audit import rules as audit_log
from shared.audit import service as entries
from shared.platform import clients, settings, store

EXPORT_STATE = ("auditExport", "state")
MAX_CHECKPOINTS = 20  # per run
JSONL = "application/jsonl"
JSON = "application/json"


class ExportNotConfigured(RuntimeError):
    pass


class Storage(Protocol):
    """Where exported objects go: created once, read back, never replaced."""

    def create(self, name: str, data: bytes, content_type: str) -> bool:
        """Create object `name`; False (nothing written) when it exists already."""
        ...

    def read(self, name: str) -> bytes | None: ...


class LocalStorage:
    """A directory: each object a file, created atomically and only if absent."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, name: str, data: bytes, content_type: str) -> bool:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, target)  # fails if the name exists: create-only, atomic
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None


class GcsStorage:
    """A Cloud Storage bucket (google-cloud-storage, imported when first used): objects are
    created with `if_generation_match=0`, so an existing one is never overwritten."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket_name, self.prefix = bucket, prefix.strip("/")
        self._bucket: Any = None

    def _blob(self, name: str) -> Any:
        if self._bucket is None:
            import google.cloud.storage as storage

            self._bucket = storage.Client().bucket(self.bucket_name)
        return self._bucket.blob(f"{self.prefix}/{name}" if self.prefix else name)

    def create(self, name: str, data: bytes, content_type: str) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self._blob(name).upload_from_string(
                data, content_type=content_type, if_generation_match=0
            )
        except PreconditionFailed:
            return False
        return True

    def read(self, name: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            data: bytes = self._blob(name).download_as_bytes()
        except NotFound:
            return None
        return data


def storage_for(url: str) -> Storage:
    """`gs://bucket/prefix`, `file:///path` or a plain path."""
    parsed = urlparse(url)
    if parsed.scheme == "gs":
        return GcsStorage(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    if parsed.scheme:
        raise ValueError(f"AUDIT_EXPORT_URL: unknown scheme {parsed.scheme!r}")
    return LocalStorage(Path(url))


def configured_storage() -> Storage:
    url = settings.get().audit_export_url
    if not url:
        raise ExportNotConfigured("AUDIT_EXPORT_URL is not set")
    return storage_for(url)


def entries_name(n: int) -> str:
    return f"entries/{cps.checkpoint_id(n)}.jsonl"


def checkpoint_name(n: int) -> str:
    return f"checkpoints/{cps.checkpoint_id(n)}.json"


def key_name(key_id: str) -> str:
    return f"keys/{key_id.replace(':', '-')}.json"


def jwk_name(key_id: str) -> str:
    return f"keys/{key_id.replace(':', '-')}.jwk.json"


def jwk_document(public: bytes) -> bytes:
    return audit_log.canonical(signing.jwk(public))


def key_document(key_id: str, public: bytes) -> bytes:
    return audit_log.canonical(
        {
            "keyId": key_id,
            "algorithm": signing.ALGORITHM,
            "publicKey": signing.encode_public_key(public),
        }
    )


@dataclass
class ExportResult:
    checkpoints: int = 0
    entries: int = 0
    through: int | None = None  # the newest checkpoint exported
    problems: list[dict[str, str]] = field(default_factory=list)
    flagged: findings.Flagged = field(default_factory=findings.Flagged)  # in those exported

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["flagged"] = self.flagged.as_dict()
        found["clean"] = not self.problems and self.flagged.clean
        return found


def _state_ref() -> Any:
    return clients.db().collection(EXPORT_STATE[0]).document(EXPORT_STATE[1])


def _put(storage: Storage, name: str, data: bytes, content_type: str) -> str | None:
    """Create the object; None when it holds `data` (now or from before), else why not."""
    if storage.create(name, data, content_type):
        return None
    if storage.read(name) == data:
        return None
    return f"the exported {name} differs from the log"


def _lines(checkpoint: dict[str, Any]) -> tuple[bytes | None, str | None, str | None]:
    """(the entries file, or None with where and why the range does not verify)."""
    keys = entries.hash_keys()
    lines: list[bytes] = []
    total = len(checkpoint["chunks"])
    for first in range(0, total, proofs.RANGE_BATCH):
        last = min(first + proofs.RANGE_BATCH, total)
        rows = proofs.read_chunk(checkpoint, first, last - first)
        offset = 0
        for chunk in range(first, last):
            found = cps.verify_chunk(checkpoint, chunk, rows[offset:], keys)
            if found:
                where = f"checkpoint {checkpoint['n']}, entry {found.position}" + (
                    f" ({found.entry_id})" if found.entry_id else ""
                )
                return None, where, found.reason
            offset += cps.chunk_bounds(checkpoint, chunk)[1]
        lines += [audit_log.leaf(r.entry_id, r.entry) for r in rows[:offset]]
    return b"".join(line + b"\n" for line in lines), None, None


def export(
    *, storage: Storage | None = None, max_checkpoints: int = MAX_CHECKPOINTS, by: str = "system"
) -> ExportResult:
    """Export the checkpoints sealed since the last export (at most `max_checkpoints`)."""
    target = storage or configured_storage()
    snap = _state_ref().get()
    through = int((snap.to_dict() or {}).get("through", 0)) if snap.exists else 0
    result = ExportResult(through=through or None)
    public = proofs.public_keys()
    previous = sealing.get(through) if through else None
    exported: list[dict[str, Any]] = []
    for n in range(through + 1, through + 1 + max_checkpoints):
        checkpoint = sealing.get(n)
        if checkpoint is None:
            break
        why = cps.own_problem(checkpoint, public) or cps.link_problem(checkpoint, previous)
        where = f"checkpoint {n}"
        data: bytes | None = None
        if why is None:
            data, found_where, why = _lines(checkpoint)
            where = found_where or where
        if data is not None:
            key_id = str(checkpoint["keyId"])
            why = (
                _put(target, key_name(key_id), key_document(key_id, public[key_id]), JSON)
                or _put(target, jwk_name(key_id), jwk_document(public[key_id]), JSON)
                or _put(target, entries_name(n), data, JSONL)
                or _put(target, checkpoint_name(n), audit_log.canonical(checkpoint), JSON)
            )
        if why:
            result.problems.append({"where": where, "reason": why})
            alerts.chain_broken(where, why)
            break
        result.checkpoints += 1
        result.entries += int(checkpoint["count"])
        result.through = n
        previous = checkpoint
        exported.append(checkpoint)
    result.flagged = findings.summarize(exported)
    if result.checkpoints:
        store.set(_state_ref(), {"through": result.through}, by=by)
    return result


# -- offline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfflineVerdict:
    ok: bool
    checkpoints: int
    entries: int
    broken_at: str | None = None  # "checkpoint n" or "checkpoint n, entry i (id)"
    reason: str | None = None
    flagged: findings.Flagged = field(default_factory=findings.Flagged)


def exported_keys(root: Path) -> dict[str, bytes]:
    """The public keys an export carries (convenient; pin them with --public-key)."""
    found: dict[str, bytes] = {}
    for path in sorted((root / "keys").glob("*.json")):
        doc = json.loads(path.read_bytes())
        if "kty" in doc:  # the JWK form of a key
            key_id, public = signing.parse_public_key(json.dumps(doc))
        else:
            key_id, public = signing.parse_public_key(str(doc["publicKey"]))
            if key_id != doc.get("keyId"):
                raise ValueError(f"{path.name}: its key id does not match its key")
        if found.setdefault(key_id, public) != public:
            raise ValueError(f"{path.name}: another key under the id {key_id}")
    return found


def verify_directory(root: Path, public_keys: dict[str, bytes]) -> OfflineVerdict:
    """Verify an exported directory from its files alone (see the module docstring)."""
    files = sorted((root / "checkpoints").glob("*.json"))
    previous: dict[str, Any] | None = None
    checked = counted = 0
    flags: list[tuple[int, str, str]] = []
    acknowledged: dict[tuple[int, str], dict[str, Any]] = {}
    for path in files:
        label = f"checkpoint {path.stem.lstrip('0') or '0'}"
        try:
            checkpoint = audit_log.canonical_json(path.read_bytes())
        except ValueError as exc:
            return OfflineVerdict(False, checked, counted, label, f"{path.name}: {exc}")
        n = int(checkpoint.get("n", 0))
        label = f"checkpoint {n}"
        if path.name != Path(checkpoint_name(n)).name:
            return OfflineVerdict(False, checked, counted, label, f"found in {path.name}")
        why = cps.own_problem(checkpoint, public_keys) or cps.link_problem(checkpoint, previous)
        if why:
            return OfflineVerdict(False, checked, counted, label, why)
        lines_path = root / entries_name(n)
        if not lines_path.exists():
            return OfflineVerdict(False, checked, counted, label, f"{entries_name(n)} is missing")
        lines = lines_path.read_bytes().split(b"\n")
        if lines[-1] != b"":
            return OfflineVerdict(False, checked, counted, label, "the entries file is cut off")
        rows: list[cps.Row] = []
        for position, line in enumerate(lines[:-1]):
            try:
                entry = audit_log.canonical_json(line)
            except ValueError as exc:
                return OfflineVerdict(
                    False, checked, counted, f"{label}, entry {position}", f"line: {exc}"
                )
            entry_id = str(entry.pop("id", ""))
            rows.append(cps.Row(entry_id, entry))
            acknowledgement = findings.acknowledgement_of_entry(entry)
            if acknowledgement is not None:
                acknowledged.setdefault(*acknowledgement)
        size = int(checkpoint["chunkSize"])
        for chunk in range(len(checkpoint["chunks"])):
            found = cps.verify_chunk(checkpoint, chunk, rows[chunk * size :], None)
            if found:
                where = f"{label}, entry {found.position}" + (
                    f" ({found.entry_id})" if found.entry_id else ""
                )
                return OfflineVerdict(False, checked, counted, where, found.reason)
        if len(rows) != int(checkpoint["count"]):
            extra = len(rows) - int(checkpoint["count"])
            return OfflineVerdict(
                False,
                checked,
                counted,
                f"{label}, entry {checkpoint['count']}",
                f"{extra} entries more than the checkpoint seals",
            )
        checked += 1
        counted += len(rows)
        previous = checkpoint
        flags += findings.flags_of([checkpoint])
    return OfflineVerdict(
        True, checked, counted, flagged=findings.resolve_offline(flags, acknowledged)
    )

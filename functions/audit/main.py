"""The `audit` function: admins read, prove and verify the audit log; the scheduler seals,
checks and exports it.

Routes (under /audit), admin only unless said:
  GET /                              entries by resource, actor, action and time range, newest first
  GET /entries/<id>                  one entry
  GET /entries/<id>/proof            its inclusion proof: verifiable with the checkpoint it carries
  GET /entries/<id>/fhir             the entry as a FHIR R4 AuditEvent
  GET /checkpoints                   checkpoints, newest first
  GET /checkpoints/<n>               one checkpoint, with its signed document
  GET /checkpoints/<n>/verify        a bounded batch of its range's entries against its chunk roots
  GET /verify                        a bounded batch of the checkpoint chain, from a checkpoint
  POST /checkpoints/<n>/flagged/<entry_id>/acknowledge
                                     what was done about an entry flagged when sealed
  GET /keys                          the checkpoint signing public keys, by key id (raw and JWK)
  POST /seal                         the next checkpoint (Cloud Scheduler, and admins)
  POST /check                        the consistency check, alerting (Cloud Scheduler, and admins)
  POST /export                       sealed ranges to Cloud Storage (Cloud Scheduler, and admins)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import flask
import functions_framework
from pydantic import ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from shared.audit import findings, proofs, sealing
from shared.audit import rules as audit_log
from shared.audit import service as audit_store
from shared.audit.rules import Action, KeyMissing
from shared.platform import errors, stored
from shared.platform.fields import Instant, Int
from shared.platform.models import Body, Page, View
from shared.web.http import Call, Function

api = Function(
    "audit",
    title="Alo Doktor audit log",
    description=(
        "Every change and every read of health data, each entry written on its own and sealed "
        "into signed Merkle checkpoints (RFC 9162 hashing, Ed25519 signatures)."
    ),
)


class AuditQuery(Page):
    resource: str | None = Field(
        default=None, min_length=3, max_length=1500, description="a document path: users/u1"
    )
    actor: str | None = Field(default=None, min_length=1, max_length=128)
    action: Action | None = None
    since: Instant | None = Field(default=None, description="inclusive")
    until: Instant | None = Field(default=None, description="exclusive")

    @model_validator(mode="after")
    def _a_range(self) -> AuditQuery:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times need a zone (e.g. 2026-01-01T00:00:00Z)")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class AuditEntry(View):
    id: str
    at: datetime = Field(description="when the change or read happened")
    written_at: datetime | None = Field(
        description="when the log wrote it (the order it is sealed in); none on legacy entries"
    )
    action: Action
    resource: str
    actor: str
    function: str | None
    request_id: str | None
    event_id: str | None
    reason: str | None
    changes: dict[str, Any] = Field(
        description="changed fields: {before, after}; redacted ones hold keyed hashes"
    )
    key_id: str | None = Field(description="the hash key its keyed hashes and mac are under")
    seq: int | None = Field(description="its place in the hash chain before issue 17")
    leaf_hash: str = Field(description="its Merkle leaf hash (RFC 9162), hex")

    @classmethod
    def of(cls, entry_id: str, d: dict[str, Any]) -> AuditEntry:
        from shared.audit import merkle

        return cls(
            id=entry_id,
            at=d["at"],
            written_at=d.get(audit_log.WRITTEN_AT),
            action=d["action"],
            resource=d["resource"],
            actor=d["actor"],
            function=d.get("function"),
            request_id=d.get("requestId"),
            event_id=d.get("eventId"),
            reason=d.get("reason"),
            changes=d.get("changes") or {},
            key_id=d.get("keyId"),
            seq=d.get("seq"),
            leaf_hash=merkle.leaf_hash(audit_log.leaf(entry_id, d)).hex(),
        )


class AuditPage(View):
    items: list[AuditEntry]
    next_cursor: str | None


class Proof(View):
    entry_id: str
    leaf: str = Field(description="the entry's canonical JSON: the bytes its leaf hash is of")
    leaf_hash: str
    index: int = Field(description="the entry's place in its checkpoint's range")
    size: int = Field(description="entries in the checkpoint's range")
    path: list[str] = Field(description="RFC 9162 inclusion path, leaf to root, hex")
    checkpoint: dict[str, Any] = Field(
        description="the signed checkpoint, canonical JSON (times as {$time})"
    )


class AuditEvent(View):
    """A FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html); the optional elements
    (period, purposeOfEvent, extension) appear only when the entry has them."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, extra="allow"
    )

    resource_type: Literal["AuditEvent"]
    id: str
    type: dict[str, Any]
    subtype: list[dict[str, Any]]
    action: Literal["C", "R", "U", "D", "E"]
    recorded: str
    outcome: str
    agent: list[dict[str, Any]]
    source: dict[str, Any]
    entity: list[dict[str, Any]]


class Checkpoint(View):
    n: int
    kind: str
    count: int
    total: int
    root: str
    prev_hash: str
    hash: str
    key_id: str
    signature: str
    sealed_at: datetime
    cutoff: datetime
    sealed_by: str
    chunks: int
    range: dict[str, Any] = Field(description="{from, through}: {at, id} or legacy {seq, hash}")
    flagged: list[dict[str, Any]] = Field(description="entries that did not verify when sealed")
    document: dict[str, Any] | None = Field(
        default=None, description="the whole signed document, canonical JSON"
    )

    @classmethod
    def of(cls, d: dict[str, Any], *, whole: bool = False) -> Checkpoint:
        return cls(
            n=d["n"],
            kind=d["kind"],
            count=d["count"],
            total=d["total"],
            root=d["root"],
            prev_hash=d["prevHash"],
            hash=d["hash"],
            key_id=d["keyId"],
            signature=d["signature"],
            sealed_at=d["sealedAt"],
            cutoff=d["cutoff"],
            sealed_by=d["sealedBy"],
            chunks=len(d["chunks"]),
            range=proofs.portable(d["range"]),
            flagged=d.get("flagged") or [],
            document=proofs.portable(d) if whole else None,
        )


class CheckpointPage(View):
    items: list[Checkpoint]
    next_cursor: str | None


# Checkpoint numbers count seals, a few a minute at most: twelve digits outlast the product.
MAX_CHECKPOINT = 999_999_999_999


class ChainQuery(Body):
    from_: Int = Field(
        default=1, ge=1, le=MAX_CHECKPOINT, alias="from", description="the first checkpoint"
    )
    limit: Int = Field(default=100, ge=1, le=proofs.CHAIN_BATCH)


class Acknowledgement(View):
    by: str = Field(description="the admin who acknowledged it")
    at: datetime
    note: str = Field(description="what was done about it")


class FlaggedEntry(View):
    checkpoint: int
    entry_id: str
    reason: str = Field(description="why it did not verify when sealed")
    acknowledged: bool
    acknowledgement: Acknowledgement | None


class Flagged(View):
    """Entries that did not verify when sealed (edited or invented before their seal): sealed
    anyway, so the chain verifies, but reported by every verdict until acknowledged."""

    count: int = Field(description="entries flagged in what was verified")
    unresolved: int = Field(description="of them, not acknowledged by an admin")
    listed: list[FlaggedEntry] = Field(
        description=f"the first {findings.LISTED} of them, acknowledged or not"
    )
    complete: bool = Field(description="false: more checkpoints flag entries than were read")


class Unsealed(View):
    count: int = Field(description="entries no checkpoint holds yet")
    more: bool = Field(description=f"more than {findings.UNSEALED_CAP}: counting stopped there")
    oldest: datetime | None = Field(description="the oldest unsealed entry's writtenAt")


_OK = "the cryptographic chain verifies (hashes, signatures, links, ranges)"
_CLEAN = "ok, and no flagged entry is unresolved: the one answer that means all is well"


class ChainVerdict(View):
    ok: bool = Field(description=_OK)
    clean: bool = Field(description=_CLEAN)
    count: int = Field(description="checkpoints that verified before any break")
    entries: int = Field(description="entries those checkpoints seal")
    through: int | None = Field(description="the last checkpoint verified")
    next: int | None = Field(description="where the next batch starts; none when done")
    broken_at: int | None = Field(description="the checkpoint that does not verify")
    reason: str | None
    flagged: Flagged = Field(description="entries the verified checkpoints flagged")
    unsealed: Unsealed = Field(description="what no checkpoint holds yet, so nothing verified")
    summary: str = Field(description="the verdict in words")


class RangeQuery(Body):
    # A chunk holds at least one entry, and a seal takes at most MAX_ENTRIES.
    chunk: Int = Field(
        default=0,
        ge=0,
        le=sealing.MAX_ENTRIES,
        description="the first chunk; past the checkpoint's last, nothing is checked",
    )
    chunks: Int = Field(default=proofs.RANGE_BATCH, ge=1, le=proofs.RANGE_BATCH)


class RangeVerdict(View):
    ok: bool = Field(description=_OK)
    clean: bool = Field(description=_CLEAN)
    flagged: Flagged = Field(description="entries the checkpoint flagged")
    checkpoint: int
    chunks: int = Field(description="chunks in the checkpoint")
    first_chunk: int
    checked_chunks: int
    entries: int = Field(description="entries verified before any break")
    next_chunk: int | None = Field(description="where the next batch starts; none when done")
    position: int | None = Field(description="the first entry that does not verify")
    entry_id: str | None
    reason: str | None


class SealQuery(Body):
    max_entries: Int = Field(default=sealing.MAX_ENTRIES, ge=1, le=sealing.MAX_ENTRIES)


class SealResult(View):
    checkpoint: Checkpoint | None = Field(description="the checkpoint made (or a racing seal's)")
    created: bool
    more: bool = Field(description="entries were left for the next seal")


class CheckQuery(Body):
    chunks: Int = Field(default=proofs.CHECK_CHUNKS, ge=0, le=400)


class Finding(View):
    where: str
    reason: str


class CheckResult(View):
    ok: bool = Field(description="nothing found that does not verify, known or new")
    clean: bool = Field(description="ok, and no flagged entry of the log is unresolved")
    checkpoints_verified: int
    newest: int | None = Field(description="the newest checkpoint verified so far")
    chunks_verified: int
    entries_verified: int
    sweep: dict[str, int] | None = Field(description="where the next run's range sweep starts")
    problems: list[Finding] = Field(
        description="findings never reported before (alerted now), the first "
        f"{proofs.LISTED_PROBLEMS}"
    )
    new: int = Field(description="findings never reported before")
    known: int = Field(description="findings found again, reported (and alerted) by a past run")
    flagged: Flagged = Field(description="entries flagged when sealed, in the whole log")


class ExportQuery(Body):
    checkpoints: Int = Field(default=20, ge=1, le=100)


class ExportResult(View):
    checkpoints: int
    entries: int
    through: int | None = Field(description="the newest checkpoint exported")
    problems: list[Finding]
    clean: bool = Field(description="no problem, and no flagged entry unresolved in this run's")
    flagged: Flagged = Field(description="entries flagged in the checkpoints exported now")


class Acknowledge(Body):
    note: str = Field(
        min_length=3,
        max_length=findings.MAX_RESOLUTION,
        description="what was done about it (investigated, restored from the export, ...)",
    )


class PublicKey(View):
    key_id: str = Field(description="the id checkpoints name in keyId")
    algorithm: Literal["ed25519"]
    current: bool = Field(description="new checkpoints are signed with it")
    public_key: str = Field(description="the raw 32-byte Ed25519 public key, base64")
    public_key_hex: str = Field(description="the same 32 bytes, hex")
    jwk: dict[str, str] = Field(description="the same key as a JWK (RFC 8037: OKP, Ed25519)")


class PublicKeys(View):
    keys: list[PublicKey]


def _number(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_CHECKPOINT)):
        raise errors.NotFound("No such checkpoint.")
    return int(raw)


def _entry(call: Call) -> tuple[str, dict[str, Any]]:
    entry_id = str(call.params["entry_id"])
    found = audit_store.get_entry(entry_id)
    if found is None:
        raise errors.NotFound("No such entry.")
    return entry_id, found


def _key_missing(exc: KeyMissing) -> errors.ApiError:
    return errors.DependencyUnavailable(str(exc), code="audit_key_missing")


@api.route("GET", "/", query=AuditQuery, response=AuditPage)
def list_entries(call: Call) -> AuditPage:
    """Audit entries matching every filter given, newest first."""
    q: AuditQuery = call.query
    rows, cursor = audit_store.list_entries(
        resource=q.resource,
        actor=q.actor,
        action=q.action,
        since=q.since,
        until=q.until,
        limit=q.limit,
        cursor=q.cursor,
    )
    return AuditPage(
        items=stored.readable(lambda row: AuditEntry.of(*row), rows), next_cursor=cursor
    )


@api.route("GET", "/entries/<entry_id>", response=AuditEntry)
def get_entry(call: Call) -> AuditEntry:
    """One entry."""
    entry_id, found = _entry(call)
    with stored.reading(f"audit/{entry_id}"):
        return AuditEntry.of(entry_id, found)


@api.route("GET", "/entries/<entry_id>/proof", response=Proof)
def entry_proof(call: Call) -> Proof:
    """The entry's inclusion proof in its checkpoint; 409 not_sealed until a seal took it."""
    entry_id = str(call.params["entry_id"])
    try:
        proof = proofs.inclusion_proof(entry_id)
    except proofs.NotSealed:
        raise errors.Conflict(
            "The entry is not in a checkpoint yet; the next seal takes it.", code="not_sealed"
        ) from None
    except proofs.RangeBroken as exc:
        raise errors.Conflict(
            f"Checkpoint {exc.checkpoint} does not verify at entry {exc.found.position}: "
            f"{exc.found.reason}",
            code="range_broken",
        ) from None
    except KeyMissing as exc:
        raise _key_missing(exc) from None
    if proof is None:
        raise errors.NotFound("No such entry.")
    return Proof.model_validate(proof)


@api.route("GET", "/entries/<entry_id>/fhir", response=AuditEvent)
def entry_fhir(call: Call) -> AuditEvent:
    """The entry as a FHIR R4 AuditEvent resource."""
    from shared.audit import fhir

    entry_id, found = _entry(call)
    with stored.reading(f"audit/{entry_id}"):
        return AuditEvent.model_validate(fhir.audit_event(entry_id, found))


@api.route("GET", "/checkpoints", query=Page, response=CheckpointPage)
def list_checkpoints(call: Call) -> CheckpointPage:
    """Checkpoints, newest first."""
    q: Page = call.query
    rows, cursor = proofs.list_checkpoints(q.limit, q.cursor)
    return CheckpointPage(
        items=stored.readable(lambda row: Checkpoint.of(row[1]), rows), next_cursor=cursor
    )


@api.route("GET", "/checkpoints/<n>", response=Checkpoint)
def get_checkpoint(call: Call) -> Checkpoint:
    """One checkpoint, with the whole signed document."""
    found = sealing.get(_number(str(call.params["n"])))
    if found is None:
        raise errors.NotFound("No such checkpoint.")
    with stored.reading(f"{sealing.CHECKPOINTS}/{call.params['n']}"):
        return Checkpoint.of(found, whole=True)


@api.route("GET", "/checkpoints/<n>/verify", query=RangeQuery, response=RangeVerdict)
def verify_range(call: Call) -> RangeVerdict:
    """Verify a bounded batch of a checkpoint's entries against the chunk roots it signed."""
    q: RangeQuery = call.query
    try:
        verdict = proofs.verify_range(_number(str(call.params["n"])), q.chunk, q.chunks)
    except KeyMissing as exc:
        raise _key_missing(exc) from None
    if verdict is None:
        raise errors.NotFound("No such checkpoint.")
    found = verdict.flagged
    return RangeVerdict.model_validate(
        {**verdict.__dict__, "flagged": found.as_dict(), "clean": verdict.ok and found.clean}
    )


@api.route("GET", "/verify", query=ChainQuery, response=ChainVerdict)
def verify(call: Call) -> ChainVerdict:
    """Verify a bounded batch of the checkpoint chain (hashes, signatures, links, ranges),
    from a checkpoint; `next` says where the next batch starts."""
    q: ChainQuery = call.query
    try:
        verdict, found = proofs.verify_batch(q.from_, q.limit)
    except KeyMissing as exc:
        raise _key_missing(exc) from None
    more = verdict.ok and verdict.checked == q.limit
    waiting = findings.unsealed()
    words = [
        f"{verdict.checked} checkpoints, {verdict.entries} entries verified"
        if verdict.ok
        else f"BROKEN at checkpoint {verdict.broken_at}: {verdict.reason}",
        found.words(),
        waiting.words(),
    ]
    return ChainVerdict(
        ok=verdict.ok,
        clean=verdict.ok and found.clean,
        count=verdict.checked,
        entries=verdict.entries,
        through=verdict.through,
        next=(verdict.through or 0) + 1 if more else None,
        broken_at=verdict.broken_at,
        reason=verdict.reason,
        flagged=Flagged.model_validate(found.as_dict()),
        unsealed=Unsealed.model_validate(waiting.as_dict()),
        summary="; ".join(w for w in words if w),
    )


@api.route(
    "POST",
    "/checkpoints/<n>/flagged/<entry_id>/acknowledge",
    body=Acknowledge,
    response=FlaggedEntry,
    status=201,
    problems=(404, 409),
)
def acknowledge(call: Call) -> FlaggedEntry:
    """Record what was done about an entry the checkpoint flagged when it was sealed: from
    then on verdicts report it as acknowledged (who, when, the note) and no longer unclean.
    The acknowledgement is itself an audit entry; 409 already_acknowledged for a second one."""
    body: Acknowledge = call.body
    entry_id = str(call.params["entry_id"])
    try:
        done = findings.acknowledge(
            _number(str(call.params["n"])), entry_id, body.note, by=call.caller.uid
        )
    except findings.NotFlagged:
        raise errors.NotFound("No such flagged entry in that checkpoint.") from None
    except findings.AlreadyAcknowledged:
        raise errors.Conflict(
            "That flagged entry is acknowledged already.", code="already_acknowledged"
        ) from None
    return FlaggedEntry.model_validate(done)


@api.route("GET", "/keys", response=PublicKeys)
def public_keys(call: Call) -> PublicKeys:
    """The public keys that verify checkpoints, by key id, the current one first: what an
    outside verifier needs besides a proof (`tools.audit_verify --public-key`)."""
    from shared.audit import signing

    configured = signing.configured()
    try:
        current = configured.current.key_id
    except KeyMissing as exc:
        raise _key_missing(exc) from None
    return PublicKeys(
        keys=[
            PublicKey(
                key_id=key.key_id,
                algorithm="ed25519",
                current=key.key_id == current,
                public_key=signing.encode_public_key(key.public),
                public_key_hex=key.public.hex(),
                jwk=signing.jwk(key.public),
            )
            for key in configured.keys
        ]
    )


@api.route("POST", "/seal", query=SealQuery, response=SealResult)
def seal(call: Call) -> SealResult:
    """Seal the entries written since the last checkpoint into the next one (one write)."""
    q: SealQuery = call.query
    try:
        sealed = sealing.seal(by=call.caller.uid, max_entries=q.max_entries)
    except sealing.ChainBroken as exc:
        raise errors.Conflict(
            f"The audit chain does not verify at {exc.where}: {exc.reason}",
            code="audit_chain_broken",
        ) from None
    except KeyMissing as exc:
        raise _key_missing(exc) from None
    return SealResult(
        checkpoint=Checkpoint.of(sealed.checkpoint) if sealed.checkpoint else None,
        created=sealed.created,
        more=sealed.more,
    )


@api.route("POST", "/check", query=CheckQuery, response=CheckResult)
def check(call: Call) -> CheckResult:
    """The consistency check: the chain since the last run and the next chunks of entries;
    whatever does not verify is logged as an alert and sent to the admins."""
    q: CheckQuery = call.query
    try:
        result = proofs.check(chunks=q.chunks, by=call.caller.uid)
    except KeyMissing as exc:
        raise _key_missing(exc) from None
    return CheckResult.model_validate(result.as_dict())


@api.route("POST", "/export", query=ExportQuery, response=ExportResult)
def export(call: Call) -> ExportResult:
    """Export the checkpoints sealed since the last export, and their entries, as JSON lines."""
    from shared.audit import export as exporting

    q: ExportQuery = call.query
    try:
        result = exporting.export(max_checkpoints=q.checkpoints, by=call.caller.uid)
    except exporting.ExportNotConfigured:
        raise errors.Conflict(
            "No export location is configured (AUDIT_EXPORT_URL).", code="export_not_configured"
        ) from None
    except KeyMissing as exc:
        raise _key_missing(exc) from None
    return ExportResult.model_validate(result.as_dict())


@functions_framework.http
def audit(request: flask.Request) -> flask.Response:
    return api.handle(request)

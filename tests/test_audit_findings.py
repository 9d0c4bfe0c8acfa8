"""Issue 29 and issue 23, through the gateway as an admin would meet them: an entry flagged
when sealed is in every verdict until an admin acknowledges it (and the acknowledgement is an
audit entry of its own); what is not sealed yet is counted in the chain's verdict; the signing
public keys are published, in raw and JWK form, and verify a proof with nothing else.

An entry is forged in the stack's own log (as an intruder would, straight through Firestore,
before its seal); the test acknowledges it, so the log is clean again after it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shared.audit import rules as audit_log
from shared.audit import service as audit
from shared.audit import signing
from shared.platform import clients
from shared.platform.context import Role, Service
from tests.support import Api, bearer, create_user, eventually, problem, service_api


@pytest.fixture(scope="module")
def admin_user(stack: Any) -> Any:
    return create_user(stack, Role.ADMIN)


@pytest.fixture(scope="module")
def admin(stack: Any, admin_user: Any) -> Api:
    return bearer(stack, admin_user)


def _forge() -> str:
    """An entry invented straight in Firestore (its mac cannot match): flagged at its seal."""
    from google.cloud import firestore

    audit.record_reads(["prescriptions/findings-model"], "findings test")
    model_id, model = next(
        (snap.id, snap.to_dict() or {})
        for snap in clients.db()
        .collection(audit.COLLECTION)
        .order_by(audit_log.WRITTEN_AT, direction=firestore.Query.DESCENDING)
        .limit(1)
        .stream()
    )
    forged_id = f"{model_id}-forged"
    clients.db().collection(audit.COLLECTION).document(forged_id).create(
        {**model, "actor": "mallory", audit_log.WRITTEN_AT: firestore.SERVER_TIMESTAMP}
    )
    return forged_id


def _sealed_in(admin: Api, sealer: Api, entry_id: str) -> dict[str, Any]:
    """Seal until a checkpoint flags the entry; that checkpoint."""

    def look() -> dict[str, Any] | None:
        assert sealer.post("/audit/seal").status_code == 200
        page = admin.get("/audit/checkpoints", params={"limit": 20}).json()
        return next(
            (c for c in page["items"] if any(f["id"] == entry_id for f in c["flagged"])), None
        )

    found = eventually(look, lambda cp: cp is not None, "the forged entry sealed")
    assert found is not None
    return found


def test_a_flagged_entry_is_in_every_verdict_until_an_admin_acknowledges_it(
    stack, admin, admin_user
):
    sealer = service_api(stack, Service.SCHEDULER, "audit")
    forged_id = _forge()

    # Issue 23: before its seal, the chain's verdict says something waits to be sealed.
    waiting = admin.get("/audit/verify", params={"from": 1, "limit": 500}).json()
    assert waiting["unsealed"]["count"] >= 1, waiting
    assert waiting["unsealed"]["oldest"] is not None
    assert "not sealed yet" in waiting["summary"]

    checkpoint = _sealed_in(admin, sealer, forged_id)
    n = checkpoint["n"]
    for _ in range(2):  # every time, not only the first
        chain = admin.get("/audit/verify", params={"from": n, "limit": 1}).json()
        assert (chain["ok"], chain["clean"]) == (True, False), chain
        assert chain["flagged"]["unresolved"] >= 1
        mine = [f for f in chain["flagged"]["listed"] if f["entryId"] == forged_id]
        assert mine == [
            {
                "checkpoint": n,
                "entryId": forged_id,
                "reason": mine[0]["reason"],
                "acknowledged": False,
                "acknowledgement": None,
            }
        ]
        assert "unresolved" in chain["summary"]
        ranged = admin.get(f"/audit/checkpoints/{n}/verify").json()
        assert (ranged["ok"], ranged["clean"]) == (True, False), ranged
        assert forged_id in [f["entryId"] for f in ranged["flagged"]["listed"]]
        checked = sealer.post("/audit/check", params={"chunks": 0}).json()
        assert checked["clean"] is False
        assert forged_id in [f["entryId"] for f in checked["flagged"]["listed"]]

    # The acknowledgement: a note is required; only a flagged entry of that checkpoint.
    route = f"/audit/checkpoints/{n}/flagged/{forged_id}/acknowledge"
    problem(admin.post(route, json={}), 400)
    problem(admin.post(route, json={"note": "ok", "extra": 1}), 400)
    problem(admin.post(route, json={"note": "x" * 5000}), 400)
    note = {"note": "investigated: forged by a test; nothing was lost"}
    problem(
        admin.post(f"/audit/checkpoints/{n + 10**6}/flagged/{forged_id}/acknowledge", json=note),
        404,
    )
    problem(admin.post(f"/audit/checkpoints/{n}/flagged/not-flagged/acknowledge", json=note), 404)
    problem(admin.post(f"/audit/checkpoints/x{n}/flagged/{forged_id}/acknowledge", json=note), 404)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    problem(patient.post(route, json=note), 403)

    done = admin.post(route, json=note)
    assert done.status_code == 201, done.text
    body = done.json()
    assert (body["acknowledged"], body["acknowledgement"]["by"]) == (True, admin_user.uid)
    assert body["acknowledgement"]["note"] == note["note"]
    problem(admin.post(route, json=note), 409, "already_acknowledged")

    chain = admin.get("/audit/verify", params={"from": n, "limit": 1}).json()
    assert (chain["ok"], chain["clean"]) == (True, True), chain
    (mine,) = [f for f in chain["flagged"]["listed"] if f["entryId"] == forged_id]
    assert mine["acknowledged"] is True
    assert mine["acknowledgement"]["by"] == admin_user.uid
    assert mine["acknowledgement"]["note"] == note["note"]
    assert admin.get(f"/audit/checkpoints/{n}/verify").json()["clean"] is True

    # The acknowledgement is itself an audit entry, by the admin.
    resource = f"auditAcknowledgements/{n:012d}-{forged_id}"

    def logged() -> list[dict[str, Any]]:
        answer = admin.get("/audit", params={"resource": resource})
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    (entry,) = eventually(logged, lambda items: len(items) == 1, "the acknowledgement's entry")
    assert (entry["action"], entry["actor"]) == ("create", admin_user.uid)
    assert entry["changes"]["resolution"]["after"] == note["note"]


def test_the_signing_keys_are_published_and_verify_a_proof_with_nothing_else(
    stack, admin, tmp_path
):
    sealer = service_api(stack, Service.SCHEDULER, "audit")
    problem(bearer(stack, create_user(stack, Role.DOCTOR)).get("/audit/keys"), 403)
    answer = admin.get("/audit/keys")
    assert answer.status_code == 200, answer.text
    keys = answer.json()["keys"]
    assert keys[0]["current"] is True
    for key in keys:
        raw = base64.b64decode(key["publicKey"])
        assert bytes.fromhex(key["publicKeyHex"]) == raw
        assert signing.public_key_id(raw) == key["keyId"]
        jwk = key["jwk"]
        assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", key["keyId"])
        assert base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4)) == raw

    # a proof of a sealed entry, checked with the published key alone (each form)
    audit.record_reads(["prescriptions/keys-test"], "keys test")

    def proof() -> dict[str, Any] | None:
        assert sealer.post("/audit/seal").status_code == 200
        cp = admin.get("/audit/checkpoints", params={"limit": 1}).json()["items"][0]
        got = admin.get(f"/audit/entries/{cp['range']['through']['id']}/proof")
        return got.json() if got.status_code == 200 else None

    found = eventually(proof, lambda p: p is not None, "a proof")
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(found))
    from tools import audit_verify

    current = keys[0]
    for form in (json.dumps(current["jwk"]), current["publicKeyHex"], current["publicKey"]):
        assert audit_verify.main(["--proof", str(path), "--public-key", form]) == 0

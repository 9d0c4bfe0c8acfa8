"""The audit log: entries written on their own and sealed into signed Merkle checkpoints.

`rules`, `merkle`, `checkpoints`, `fhir` (pure), `signing` (the checkpoints' keys), `service`
(writing and reading entries, `record_read`), `sealing`, `proofs` (bounded verification,
inclusion proofs, the scheduled check), `export`, `alerts`, `events` (Firestore CloudEvents
to plain changes). Served by functions/audit and functions/audit-trigger; the request pipeline
(shared.web.http) records the reads of health data every answer carries."""

"""The audit log: canonical form, diff and verification (`rules`, pure), appending and
querying (`service`), and Firestore CloudEvents to plain changes (`events`). Served by
functions/audit and functions/audit-trigger; every feature may record reads of health data."""

"""The package every Alo Doktor function imports: one place for each cross-cutting concern.

Modules import their heavy dependencies (firebase_admin, google.cloud.firestore) lazily, so a
function's cold start pays only for what its first request uses.
"""

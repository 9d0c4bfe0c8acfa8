"""Prescriptions: the lifecycle (`rules`, pure) and its Firestore records (`service`).
Served by functions/prescriptions."""

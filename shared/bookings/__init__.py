"""Clinic bookings: the state machine, windows and capacity (`rules`, pure), and requests,
transitions and dashboards in Firestore (`service`). Served by functions/bookings."""

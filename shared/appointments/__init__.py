"""Appointments: slot maths (`schedule`, pure), the state machine (`rules`, pure), and slots,
booking, holds and lists in Firestore (`service`). Served by functions/appointments."""

"""The one place where features are combined: cancelling (then queueing and sending the
refund), what payments see of appointments and bookings, prescribing for an appointment.
It may import every room; no room imports it."""

"""Notifications: delivering the outbox by e-mail, SMS and push, with preferences and retries.

`rules` is pure (what each notice kind is, the delivery state machine, backoff, failure
classes, preference and quiet-hour resolution, unsubscribe tokens), `templates` renders a notice
per locale, `service` is the Firestore side (claims, deliveries, preferences, devices), `events`
reads the domain event log and its daily aggregates.
"""

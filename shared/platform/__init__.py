"""The platform layer: settings, clients, logs, request context, errors, money, models,
the one write path (`store`), pagination, idempotency and the notification outbox.

It imports no other room of `shared/`; every other room may import it."""

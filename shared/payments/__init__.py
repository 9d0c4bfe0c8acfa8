"""Payments: what may be paid and the refund policy (`rules`, pure), double-entry arithmetic
(`ledger`, pure), orders, refunds, webhooks and the ledger in Firestore. What an order pays
for is reached through the `subjects` port, which the workflows layer implements. Served by
functions/paypal-create, paypal-capture, paypal-webhook and payments."""

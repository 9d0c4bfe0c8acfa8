"""Payouts: providers paid what they earned through PayPal Payouts, by Cloud Tasks jobs.

`rules` (pure: what is payable, the payout's states, PayPal's item outcomes, the payout
address), `records` (reading payouts), `scheduling` (the weekly run: payouts recorded with the
money set aside in the ledger, then one named task each), `sending` (the task's worker: the
only payout code that pays through PayPal), `reconciling` (PayPal's webhooks, the sweep, the
daily in-transit check, admins' hold, release, retry and cancel), `addresses` (a provider's
payout address, its verification and cooling-off), `views`. It builds on payments (the
ledger, orders); payments never imports it. What an order paid for is reached through the
`deliveries` port, which the workflows layer implements. Served by functions/payouts.
"""

"""Clients of third-party services (PayPal). Imports the platform layer only; what a reply
means for our records is decided by the feature that called."""

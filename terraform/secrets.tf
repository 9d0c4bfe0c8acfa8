# Secret id -> the environment variable the code reads it from. Terraform makes the secrets
# and grants access; their values are added by hand (docs/guides/deploy.md, "From zero", step 4;
# docs/runbooks/rotate-a-secret.md) and so never appear in this configuration or its state.
locals {
  secrets = {
    "paypal-client-id"          = "PAYPAL_CLIENT_ID"
    "paypal-client-secret"      = "PAYPAL_CLIENT_SECRET"
    "paypal-webhook-id"         = "PAYPAL_WEBHOOK_ID"
    "paypal-payouts-webhook-id" = "PAYPAL_PAYOUTS_WEBHOOK_ID"
    "smtp-username"             = "SMTP_USERNAME"
    "smtp-password"             = "SMTP_PASSWORD"
    "twilio-account-sid"        = "TWILIO_ACCOUNT_SID"
    "twilio-auth-token"         = "TWILIO_AUTH_TOKEN"
    "notify-signing-key"        = "NOTIFY_SIGNING_KEY" # unsubscribe tokens
    "audit-hash-key"            = "AUDIT_HASH_KEY"     # keyed hashes of audit entries
    "audit-signing-key"         = "AUDIT_SIGNING_KEY"  # Ed25519 key signing the checkpoints
  }

  # (function, secret) pairs: accessor on that one secret for that one function.
  secret_access = merge([
    for name, f in local.fn : { for s in f.secrets : "${name}/${s}" => { function = name, secret = s } }
  ]...)
}

resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  secret_id = each.key

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

# Who may read a secret's value is granted by a person, never CI (tools/plan_guard.py; the
# deployer cannot set a secret's policy, or it could make itself an accessor): a function that
# needs a new secret is deployed after a person applies its grant.
resource "google_secret_manager_secret_iam_member" "fn" {
  for_each  = local.secret_access
  secret_id = google_secret_manager_secret.secret[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

# Every function: one entry per folder under functions/ (tests/test_terraform.py fails, naming
# the folder, when one has no entry or an entry has no folder). Adding a function is adding
# its entry here; roles, secrets, triggers and alerts follow from it.
#
#   trigger        "http" (routes, shared.web.http) or "event" (Firestore CloudEvents)
#   public         http: anyone may reach it (browser through Hosting, PayPal); the code
#                  authenticates every route itself. Not public: only our service accounts.
#   on, event      event: which documents (audited = the code's audited collections, outbox =
#                  the notifications outbox) and which change (written, created)
#   secrets        Secret Manager secrets (secrets.tf) it reads, as environment variables
#   queues         Cloud Tasks queues (schedule.tf) it creates tasks in
#   tasks_worker   Cloud Tasks delivers to it (routes the policy opens to Service.TASKS)
#   min_instances, max_instances, memory, timeout (seconds), env: sizing and extra environment
#                  (a tasks worker's timeout is at least Cloud Tasks' dispatch deadline)
#   concurrency, cpu  requests one instance serves at once, and its vCPUs. HTTP functions: 8
#                  on 1 vCPU, as functions-framework's 8 threads serve them locally (the code is
#                  thread-safe; at 512Mi Cloud Run's default is about 0.33 vCPU and one request
#                  at a time). Event functions: one event at a time on the default CPU, each
#                  delivery retried on its own; Eventarc scales them out.
#
# secrets, queues and tasks_worker are what `python -m tools.code_facts` reads in the code; the
# test holds this table to it, so a grant the code no longer needs fails CI. What a function
# may do in Firebase Auth and FCM is not written here at all: generated/code.json lists the
# IAM permissions its Auth calls and push sends need (tools.code_facts.AUTH_PERMISSIONS,
# FCM_PERMISSIONS), and each such function gets a custom role holding exactly those.
locals {
  functions = {
    "session" = {
      trigger = "http", public = true, min_instances = 1, max_instances = 20
      secrets = ["audit-hash-key"]
    }
    "admin-users" = {
      trigger = "http", public = true
      secrets = ["audit-hash-key"]
    }
    "users" = {
      trigger = "http", public = true
      secrets = ["audit-hash-key"]
    }
    "appointments" = {
      trigger = "http", public = true, min_instances = 1, max_instances = 20
      secrets = ["paypal-client-id", "paypal-client-secret", "paypal-webhook-id", "audit-hash-key"]
    }
    "prescriptions" = {
      trigger = "http", public = true
      secrets = ["audit-hash-key"]
    }
    "bookings" = {
      trigger = "http", public = true
      secrets = ["paypal-client-id", "paypal-client-secret", "paypal-webhook-id", "audit-hash-key"]
    }
    "audit" = {
      trigger = "http", public = true, timeout = 300
      secrets = ["audit-hash-key", "audit-signing-key"]
      # Sealed ranges are exported here (storage.tf); the bucket's lock keeps them.
      env = { AUDIT_EXPORT_URL = "gs://${google_storage_bucket.audit_export.name}/audit" }
    }
    "audit-trigger" = {
      trigger = "event", on = "audited", event = "written", max_instances = 20
      secrets = ["audit-hash-key"]
    }
    "payments" = {
      trigger = "http", public = true, timeout = 120
      secrets = ["paypal-client-id", "paypal-client-secret", "paypal-webhook-id", "audit-hash-key"]
    }
    "paypal-create" = {
      trigger = "http", public = true
      secrets = ["paypal-client-id", "paypal-client-secret", "paypal-webhook-id", "audit-hash-key"]
    }
    "paypal-capture" = {
      trigger = "http", public = true
      secrets = ["paypal-client-id", "paypal-client-secret", "paypal-webhook-id", "audit-hash-key"]
    }
    "paypal-webhook" = {
      trigger = "http", public = true
      secrets = ["paypal-client-id", "paypal-client-secret", "paypal-webhook-id", "audit-hash-key"]
    }
    # A tasks worker's timeout covers Cloud Tasks' dispatch deadline (300 s, HttpTask in
    # shared/integrations/cloud_tasks.py): cut off sooner, a delivery still running would be
    # retried while it runs.
    "payouts" = {
      trigger = "http", public = true, timeout = 300, queues = ["payouts"], tasks_worker = true
      secrets = [
        "paypal-client-id", "paypal-client-secret", "paypal-webhook-id", "paypal-payouts-webhook-id",
        "audit-hash-key",
      ]
      env = { CLOUD_TASKS_LOCATION = var.region } # the queue's location (schedule.tf)
    }
    # Personal data (issue 27): consent, export, erasure (deletes Firebase Auth accounts).
    "privacy" = {
      trigger = "http", public = true, timeout = 300, queues = ["privacy"], tasks_worker = true
      secrets = ["audit-hash-key"]
      env     = { CLOUD_TASKS_LOCATION = var.region } # the export queue's location (schedule.tf)
    }
    # notify sends, notifications retries and sweeps: both hold the senders' credentials.
    "notify" = {
      trigger = "event", on = "outbox", event = "created", timeout = 120
      secrets = [
        "smtp-username", "smtp-password", "twilio-account-sid", "twilio-auth-token", "notify-signing-key",
      ]
      env = local.notify_env
    }
    "notifications" = {
      trigger = "http", public = true, timeout = 120
      secrets = [
        "smtp-username", "smtp-password", "twilio-account-sid", "twilio-auth-token", "notify-signing-key",
        "audit-hash-key",
      ]
      env = local.notify_env
    }
  }

  notify_env = {
    # Unsubscribe links point at the notifications function through the front end's origin.
    NOTIFICATIONS_URL = "${var.frontend_origins[0]}/api/notifications"
    SMTP_HOST         = var.smtp_host
    MAIL_FROM         = var.mail_from
    TWILIO_FROM       = var.twilio_from
  }

  # The table with every attribute filled in, one type for all entries.
  fn = {
    for name, f in local.functions : name => {
      trigger       = f.trigger
      public        = try(f.public, false)
      on            = try(f.on, null)
      event         = try(f.event, null)
      secrets       = toset(try(f.secrets, []))
      queues        = toset(try(f.queues, []))
      tasks_worker  = try(f.tasks_worker, false)
      min_instances = try(f.min_instances, 0)
      max_instances = try(f.max_instances, 10)
      memory        = try(f.memory, "512Mi")
      timeout       = try(f.timeout, 60)
      concurrency   = try(f.concurrency, f.trigger == "http" ? 8 : 1)
      cpu           = try(f.cpu, f.trigger == "http" ? "1" : null)
      env           = tomap(try(f.env, {}))
    }
  }

  # Scheduler and Tasks sign their OIDC tokens for this URL plus the function's name, and the
  # code checks that audience (FUNCTIONS_BASE_URL); Gen2 functions answer on it too.
  functions_base_url = "https://${var.region}-${var.project_id}.cloudfunctions.net"

  common_env = {
    GOOGLE_CLOUD_PROJECT      = var.project_id
    ALLOWED_ORIGINS           = join(",", var.frontend_origins)
    FRONTEND_URL              = var.frontend_origins[0] # where PayPal sends the buyer back
    FUNCTIONS_BASE_URL        = local.functions_base_url
    SCHEDULER_SERVICE_ACCOUNT = google_service_account.scheduler.email
    TASKS_SERVICE_ACCOUNT     = google_service_account.tasks.email
    PAYPAL_API_BASE           = var.paypal_api_base
  }

  bundles_dir = startswith(var.bundles_dir, "/") ? var.bundles_dir : "${path.module}/${var.bundles_dir}"
  bundles     = jsondecode(file("${local.bundles_dir}/manifest.json"))

  # Project-level roles per function: Firestore for all, and its own custom role with the
  # Firebase Auth and FCM permissions its code calls (none: no role).
  function_roles = merge(
    { for name, f in local.fn : "${name}/firestore" => { function = name, role = "roles/datastore.user" } },
    { for name, p in local.code.function_permissions : "${name}/code" => { function = name, role = google_project_iam_custom_role.fn[name].name } },
  )
}

# Predefined roles grant more than the code calls (firebaseauth.admin: Auth's configuration and
# deleting users; firebasecloudmessaging.admin: topics and delivery data), so each function
# that calls Firebase Auth or sends push holds a role of exactly the permissions its code
# needs, as tools/code_facts reads them (generated/code.json; a test holds the two equal).
resource "google_project_iam_custom_role" "fn" {
  for_each    = local.code.function_permissions
  project     = var.project_id
  role_id     = "alodoktor.${replace(each.key, "-", "_")}"
  title       = "Alo Doktor function ${each.key}"
  description = "What functions/${each.key} calls in Firebase Auth and FCM (terraform/generated/code.json)"
  permissions = each.value
}

resource "google_project_iam_member" "fn" {
  for_each = local.function_roles
  project  = var.project_id
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

# What a function build does: read its zip, push its image, write the build log.
resource "google_storage_bucket_iam_member" "builder" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_project_iam_member" "builder" {
  for_each = toset(["roles/artifactregistry.writer", "roles/logging.logWriter"])
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_storage_bucket_object" "bundle" {
  for_each = local.fn
  # Content-hashed: new code is a new name (Cloud Functions rebuilds), the same code the same
  # name (nothing to do). The zip is exactly tools/bundle.py's bundle (tools/deploy_bundles.py).
  name         = "functions/${each.key}/${local.bundles[each.key].sha256}.zip"
  bucket       = google_storage_bucket.source.name
  source       = "${local.bundles_dir}/${local.bundles[each.key].file}"
  content_type = "application/zip"
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:Public functions take ALLOW_ALL on purpose: Firebase Hosting's rewrites and PayPal's webhooks reach them from outside; event functions are ALLOW_INTERNAL_ONLY
  for_each    = local.fn
  name        = each.key
  location    = var.region
  description = "Alo Doktor: functions/${each.key}"

  build_config {
    runtime         = "python311" # the interpreter `make test` runs the bundles on
    entry_point     = replace(each.key, "-", "_")
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.bundle[each.key].name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.fn[each.key].email
    min_instance_count               = each.value.min_instances
    max_instance_count               = each.value.max_instances
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    max_instance_request_concurrency = each.value.concurrency
    timeout_seconds                  = each.value.timeout
    all_traffic_on_latest_revision   = true
    # Event functions take Eventarc's pushes, which Cloud Run counts as internal traffic.
    ingress_settings      = each.value.public ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    environment_variables = merge(local.common_env, var.settings, each.value.env)

    dynamic "secret_environment_variables" {
      for_each = each.value.secrets
      content {
        key        = local.secrets[secret_environment_variables.value]
        project_id = var.project_id
        secret     = google_secret_manager_secret.secret[secret_environment_variables.value].secret_id
        version    = lookup(var.secret_versions, secret_environment_variables.value, "latest")
      }
    }
  }

  lifecycle {
    precondition {
      condition     = contains(keys(local.bundles), each.key)
      error_message = "No bundle for ${each.key} in ${local.bundles_dir}: run python -m tools.deploy_bundles."
    }
  }

  depends_on = [
    google_project_service.api,
    google_project_iam_member.builder,
    google_storage_bucket_iam_member.builder,
    google_secret_manager_secret_iam_member.fn,
  ]
}

# Public HTTP functions: anyone may invoke; the code authenticates each route (session cookie,
# Firebase ID token, OIDC token or PayPal's signature). The binding goes on the Cloud Run
# service behind the function: the function resource itself refuses allUsers.
resource "google_cloud_run_service_iam_member" "public" {
  #checkov:skip=CKV_GCP_102:Public by design: browsers (through Firebase Hosting) and PayPal's webhooks call these; every route authenticates in code (shared/web/http.py)
  for_each = { for name, f in local.fn : name => f if f.trigger == "http" && f.public }
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

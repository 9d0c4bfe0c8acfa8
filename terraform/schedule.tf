# Cloud Scheduler and Cloud Tasks call functions with Google-signed OIDC tokens of these two
# accounts, for the audience `${FUNCTIONS_BASE_URL}/<function>`; the code knows them by
# SCHEDULER_SERVICE_ACCOUNT and TASKS_SERVICE_ACCOUNT and lets each call only the routes the
# policy names for it (shared/web/policy.py, Service.SCHEDULER / Service.TASKS).
resource "google_service_account" "scheduler" {
  account_id   = "scheduler-invoker"
  display_name = "Cloud Scheduler's jobs"
}

resource "google_service_account" "tasks" {
  account_id   = "tasks-invoker"
  display_name = "Cloud Tasks deliveries"
}

locals {
  # Every route the policy opens to Service.SCHEDULER has a job here (a test checks both ways).
  schedules = {
    "appointments-sweep" = {
      function    = "appointments", path = "/sweep", schedule = "*/5 * * * *"
      description = "Expire unpaid appointment holds"
    }
    "bookings-sweep" = {
      function    = "bookings", path = "/sweep", schedule = "*/15 * * * *"
      description = "Decline clinic booking requests left unanswered"
    }
    "refunds-sweep" = {
      function    = "payments", path = "/refunds/sweep", schedule = "*/10 * * * *"
      description = "Send refunds PayPal was unreachable for"
    }
    "auth-reconcile" = {
      function    = "admin-users", path = "/reconcile", schedule = "23 * * * *"
      description = "Repair drift between Firebase Auth and the access records"
    }
    "payouts-run" = {
      function    = "payouts", path = "/run", schedule = "0 6 * * 1"
      description = "This week's payouts: one named task per provider and currency"
    }
    "payouts-sweep" = {
      function    = "payouts", path = "/sweep", schedule = "*/30 * * * *"
      description = "Ask PayPal about payouts not final yet"
    }
    "payouts-check" = {
      function    = "payouts", path = "/check", schedule = "30 5 * * *"
      description = "Reconcile money in transit with the open payouts"
    }
    "audit-seal" = {
      function    = "audit", path = "/seal", schedule = "*/5 * * * *"
      description = "Seal the audit entries written since the last checkpoint"
    }
    "audit-check" = {
      function    = "audit", path = "/check", schedule = "*/15 * * * *"
      description = "Verify the newest checkpoints and a sample of sealed ranges; alert on a break"
    }
    "audit-export" = {
      function    = "audit", path = "/export", schedule = "17 * * * *"
      description = "Export sealed ranges with their checkpoints to the retention bucket"
    }
    "notifications-sweep" = {
      function    = "notifications", path = "/sweep", schedule = "*/5 * * * *"
      description = "Deliver notices a trigger missed and retries that are due"
    }
  }

  scheduled_functions = toset([for job in local.schedules : job.function])

  queues = {
    # Payout jobs: named tasks (a reused name is refused), retried with backoff for a day;
    # few at a time so PayPal's rate limits are never the reason one fails.
    payouts = {
      max_dispatches_per_second = 2
      max_concurrent_dispatches = 5
      max_attempts              = 50
      max_retry_duration        = "86400s"
      min_backoff               = "10s"
      max_backoff               = "3600s"
      max_doublings             = 6
    }
  }

  # (function, queue) pairs: enqueuer on that queue for that function.
  queue_access = merge([
    for name, f in local.fn : { for q in f.queues : "${name}/${q}" => { function = name, queue = q } }
  ]...)
  task_creators = toset([for pair in local.queue_access : pair.function])
}

resource "google_cloud_scheduler_job" "job" {
  for_each         = local.schedules
  name             = each.key
  description      = each.value.description
  region           = var.region
  schedule         = each.value.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "320s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "10s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${local.functions_base_url}/${each.value.function}${each.value.path}"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = "${local.functions_base_url}/${each.value.function}"
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_cloud_run_service_iam_member" "scheduler_invoker" {
  for_each = local.scheduled_functions
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_tasks_queue" "queue" {
  for_each = local.queues
  name     = each.key
  location = var.region

  rate_limits {
    max_dispatches_per_second = each.value.max_dispatches_per_second
    max_concurrent_dispatches = each.value.max_concurrent_dispatches
  }

  retry_config {
    max_attempts       = each.value.max_attempts
    max_retry_duration = each.value.max_retry_duration
    min_backoff        = each.value.min_backoff
    max_backoff        = each.value.max_backoff
    max_doublings      = each.value.max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  # A deleted queue's name cannot be used again for days, and its pending tasks are lost.
  lifecycle {
    prevent_destroy = true
  }

  depends_on = [google_project_service.api]
}

resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = local.queue_access
  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.queue[each.value.queue].name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

# A task carrying an OIDC token of the tasks account may be created only by a caller that may
# act as that account: granted on that one account, never project-wide.
resource "google_service_account_iam_member" "tasks_act_as" {
  for_each           = local.task_creators
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_cloud_run_service_iam_member" "tasks_invoker" {
  for_each = { for name, f in local.fn : name => f if f.tasks_worker }
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}

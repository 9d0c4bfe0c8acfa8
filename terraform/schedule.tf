# Cloud Scheduler and Cloud Tasks call functions with Google-signed OIDC tokens of their two
# accounts (accounts.tf), for the audience `${FUNCTIONS_BASE_URL}/<function>`; the code knows
# them by SCHEDULER_SERVICE_ACCOUNT and TASKS_SERVICE_ACCOUNT and lets each call only the
# routes the policy names for it (shared/web/policy.py, Service.SCHEDULER / Service.TASKS).
locals {
  # The jobs, their time zone and retry policy: terraform/schedules.json, which the local
  # stack's scheduler reads too, so both run exactly the same jobs.
  schedule_config = jsondecode(file("${path.module}/schedules.json"))
  schedules       = local.schedule_config.jobs

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
    # Exports' builds (issue 27): one task a part, each enqueueing the next; a failed part is
    # retried for an hour, then the request shows the build stopped where it was.
    privacy = {
      max_dispatches_per_second = 5
      max_concurrent_dispatches = 10
      max_attempts              = 20
      max_retry_duration        = "3600s"
      min_backoff               = "5s"
      max_backoff               = "300s"
      max_doublings             = 4
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
  time_zone        = local.schedule_config.time_zone
  attempt_deadline = local.schedule_config.attempt_deadline

  retry_config {
    retry_count          = local.schedule_config.retry_config.retry_count
    min_backoff_duration = local.schedule_config.retry_config.min_backoff_duration
    max_backoff_duration = local.schedule_config.retry_config.max_backoff_duration
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

resource "google_cloud_run_service_iam_member" "tasks_invoker" {
  for_each = { for name, f in local.fn : name => f if f.tasks_worker }
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}

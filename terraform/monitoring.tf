resource "google_monitoring_notification_channel" "email" {
  count        = var.alert_email == "" ? 0 : 1
  display_name = "Alo Doktor alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
}

locals {
  notification_channels = google_monitoring_notification_channel.email[*].id
  # An alert policy without a channel opens incidents nobody hears of: only a throwaway
  # project may have none (the alert policies below refuse to be applied otherwise).
  alerts_reach_someone = length(local.notification_channels) > 0 || var.throwaway_project
  no_channel_error     = "alert_email is empty: alerts would notify nobody. Set it in the environment's settings file (docs/guides/deploy.md, From zero, step 3), or throwaway_project = true for a test project."

  # Log lines an admin must hear about. Each is matched by its logger, its severity and the
  # start of its message: the code's format string (module constants filled in) up to where
  # it varies, each %s matching anything. tests/test_terraform.py finds each in the code
  # (tools/code_facts.log_lines) or, for a `pending` one, checks the code does not write it
  # yet: the line to write is named here, and neither side can drift.
  log_alerts = {
    unhandled_errors = {
      logger = "alodoktor.http", severity = "ERROR", message = "unhandled error in "
      doc    = "A request ended in an unexpected exception (a 500). The entry carries the stack trace; Error Reporting groups them."
    }
    audit_event_ignored = {
      logger = "alodoktor.audit-trigger", severity = "ERROR", message = "ignored event "
      doc    = "Eventarc delivered an event the audit trigger could not read: a change went unaudited. Compare the document with the audit log (GET /audit/verify)."
    }
    audit_chain_broken = {
      logger = "alodoktor.audit", severity = "ERROR", message = "audit chain broken at "
      doc    = "The scheduled audit check found an entry or checkpoint that does not verify: the log was edited, deleted or inserted into. Run python -m tools.audit_verify."
    }
    payout_alerts = {
      logger = "alodoktor.payouts", severity = "ERROR", message = "PAYOUT_ALERT "
      doc    = "A payout needs an admin (jsonPayload.alert says which): payout_refused (PayPal refused it), payout_reversed (a paid payout was taken back), payout_batch_unknown, or payouts_in_transit_mismatch (the daily reconciliation found money in transit that does not equal the open payouts). Each also sent the admins a notice."
    }
    payout_not_enqueued = {
      logger = "alodoktor.payouts", severity = "ERROR", message = "payout %s recorded but not enqueued"
      doc    = "A payout was recorded but its Cloud Task could not be created; the next weekly run enqueues it. Repeated: Cloud Tasks or the payouts queue is failing."
    }
    notification_failed = {
      logger = "alodoktor.notify", severity = "ERROR", message = "notice %s failed for good on "
      doc    = "A notice (e-mail, SMS or push) failed for good on a channel after its retries."
    }
    auth_drift = {
      logger = "alodoktor.reconciliation", severity = "WARNING", message = "auth drift repaired for "
      doc    = "The reconciliation repaired a difference between Firebase Auth and the backend: an account changed outside it (disabled or deleted in the Firebase console) brought into its access record, or Auth's role and approval claims set back to the decision the backend holds (an Auth call that failed after the decision was made, or claims edited in the console). Now and then is expected; a stream of them means Auth is failing the backend's calls, or something writes Auth behind the backend's back."
    }
    deletion_unfinished = {
      logger = "alodoktor.reconciliation", severity = "WARNING", message = "deletion of %s unfinished"
      doc    = "An account an admin deleted is closed (its access record a tombstone, no request or sign-in gets in) but its Firebase Auth user is still there: the deletion failed part way and was not asked again. Send the same DELETE /admin-users/<uid> again to finish it."
    }
    refund_refused = {
      logger = "alodoktor.refunds", severity = "ERROR", message = "PayPal refused refund "
      doc    = "PayPal refused a refund for good: the patient is owed money the platform has not returned."
    }
    refund_stuck = {
      logger = "alodoktor.refunds", severity = "ERROR", message = "refund %s has waited for PayPal since "
      doc    = "A refund has waited a day or more for PayPal to take it (PayPal down, or answering 'not now' or refusing our credentials): the sweep keeps trying, but the patient is still waiting. Check PAYPAL credentials and PayPal's status; jsonPayload.fields names the refund and order."
    }
  }
}

resource "google_logging_metric" "log_alert" {
  for_each = local.log_alerts
  name     = "alodoktor/${each.key}"
  filter = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "severity>=${each.value.severity}",
    "jsonPayload.logger=\"${each.value.logger}\"",
    "jsonPayload.message=~\"^${replace(each.value.message, "%s", ".*")}\"",
  ])
  description = each.value.doc

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "function"
      value_type  = "STRING"
      description = "The function (Cloud Run service) that logged it"
    }
    labels {
      key         = "alert"
      value_type  = "STRING"
      description = "jsonPayload.alert, where the line names its kind (payout alerts)"
    }
  }

  label_extractors = {
    function = "EXTRACT(resource.labels.service_name)"
    alert    = "EXTRACT(jsonPayload.alert)"
  }
}

resource "google_monitoring_alert_policy" "log_alert" {
  for_each              = local.log_alerts
  display_name          = "Alo Doktor: ${replace(each.key, "_", " ")}"
  combiner              = "OR"
  severity              = each.value.severity == "ERROR" ? "ERROR" : "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${each.key} logged"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.log_alert[each.key].name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.function"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    content   = each.value.doc
    mime_type = "text/markdown"
  }

  lifecycle {
    precondition {
      condition     = local.alerts_reach_someone
      error_message = local.no_channel_error
    }
  }
}

# 5xx rate per function, from Cloud Run's own request count rather than a log line: it also
# counts what no code can log (a crash, an instance out of memory, a timeout).
resource "google_monitoring_alert_policy" "http_5xx" {
  for_each              = local.fn
  display_name          = "Alo Doktor: ${each.key} 5xx above 2%"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${each.key}: share of 5xx answers over 5 minutes"
    condition_threshold {
      filter             = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${each.key}\" AND metric.type=\"run.googleapis.com/request_count\" AND metric.labels.response_code_class=\"5xx\""
      denominator_filter = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${each.key}\" AND metric.type=\"run.googleapis.com/request_count\""
      comparison         = "COMPARISON_GT"
      threshold_value    = 0.02
      duration           = "300s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.labels.service_name"]
      }
      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.labels.service_name"]
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    content   = "More than 2% of ${each.key}'s answers were 5xx for 5 minutes. Its logs: resource.type=\"cloud_run_revision\" resource.labels.service_name=\"${each.key}\" severity>=ERROR."
    mime_type = "text/markdown"
  }

  lifecycle {
    precondition {
      condition     = local.alerts_reach_someone
      error_message = local.no_channel_error
    }
  }
}

# Requests Cloud Run refused for want of an instance: every one of the function's
# max_instances was serving its `concurrency` requests (functions.tf). The code never answers
# 429 itself, so each one counted here is a caller turned away at the door.
resource "google_monitoring_alert_policy" "overflow" {
  for_each              = local.fn
  display_name          = "Alo Doktor: ${each.key} at its instance limit"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${each.key}: requests refused with 429 for want of an instance"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${each.key}\" AND metric.type=\"run.googleapis.com/request_count\" AND metric.labels.response_code=\"429\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.labels.service_name"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    content   = "Cloud Run answered ${each.key}'s callers 429: all ${each.value.max_instances} instances were serving ${each.value.concurrency} request(s) each. If the traffic is real, raise max_instances (or concurrency) in terraform/functions.tf; if requests are slow, find what holds them (a dependency's latency in the logs: resource.type=\"cloud_run_revision\" resource.labels.service_name=\"${each.key}\")."
    mime_type = "text/markdown"
  }

  lifecycle {
    precondition {
      condition     = local.alerts_reach_someone
      error_message = local.no_channel_error
    }
  }
}

# Failures no function logs, because the function never ran or ran too often: what Cloud
# Scheduler and Cloud Tasks log of their own attempts. Each matches that service's log entries
# (resource type and filter) and counts them by job or queue.
locals {
  delivery_alerts = {
    scheduler_job_failed = {
      resource = "cloud_scheduler_job", target = "job_id", threshold = 0
      # A failed attempt's AttemptFinished entry is logged at ERROR, with jsonPayload.status.
      filter = "severity>=ERROR"
      doc    = "A Cloud Scheduler job's attempt failed: its function answered non-2xx, timed out or could not be reached (jsonPayload.status and httpRequest.status say which). The job retries as terraform/schedules.json says; one that keeps failing leaves its work undone (audit seals, sweeps, the payout run). Read the function's logs at that time, fix, then run the job: gcloud scheduler jobs run <job> --location <region>."
    }
    task_failed_for_good = {
      resource = "cloud_tasks_queue", target = "queue_id", threshold = 0
      # A failed attempt with no retryTime is the last one: max attempts or retry duration
      # reached (schedule.tf's queues), and Cloud Tasks drops the task.
      filter = "jsonPayload.attemptResponseLog.status!=\"OK\" AND NOT jsonPayload.attemptResponseLog.retryTime:*"
      doc    = "A Cloud Tasks task failed its last attempt and was dropped (jsonPayload.task names it): a payout delivery or an export part that will not run again by itself. payouts queue: a payout left scheduled is enqueued again by the next run (docs/runbooks/payout-failed.md); privacy queue: the export's request shows its build stopped where it was (GET /privacy/exports/<id>)."
    }
    task_attempts_failing = {
      resource = "cloud_tasks_queue", target = "queue_id", threshold = 10
      filter   = "jsonPayload.attemptResponseLog.status!=\"OK\""
      doc      = "More than 10 Cloud Tasks deliveries failed in 5 minutes (jsonPayload.attemptResponseLog.status says how: the worker's answer, a timeout, a refused token). They are being retried, but a queue failing this often will drop tasks once their retries run out. Read the worker function's logs."
    }
  }
}

resource "google_logging_metric" "delivery_alert" {
  for_each    = local.delivery_alerts
  name        = "alodoktor/${each.key}"
  filter      = "resource.type=\"${each.value.resource}\" AND ${each.value.filter}"
  description = each.value.doc

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "target"
      value_type  = "STRING"
      description = "The Cloud Scheduler job or the Cloud Tasks queue"
    }
  }

  label_extractors = {
    target = "EXTRACT(resource.labels.${each.value.target})"
  }
}

resource "google_monitoring_alert_policy" "delivery_alert" {
  for_each              = local.delivery_alerts
  display_name          = "Alo Doktor: ${replace(each.key, "_", " ")}"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${each.key} logged"
    condition_threshold {
      filter          = "resource.type=\"${each.value.resource}\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.delivery_alert[each.key].name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.target"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    content   = each.value.doc
    mime_type = "text/markdown"
  }

  lifecycle {
    precondition {
      condition     = local.alerts_reach_someone
      error_message = local.no_channel_error
    }
  }
}

# Eventarc delivers the Firestore events (events.tf) through Pub/Sub subscriptions it makes and
# names itself, the only subscriptions of the project. A message unacknowledged for 15 minutes
# is an event its function keeps refusing or cannot take: audit entries or notices are late,
# and Pub/Sub drops a message after its retention (a day, by default): an unaudited change.
resource "google_monitoring_alert_policy" "event_backlog" {
  display_name          = "Alo Doktor: event deliveries stuck"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "oldest unacknowledged event older than 15 minutes"
    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = 900
      duration        = "60s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.labels.subscription_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    content   = "An Eventarc subscription (subscription_id names its trigger: audit-trigger-<collection> or notify-notifications) holds an event older than 15 minutes: its function refuses it (5xx, a timeout) or cannot keep up. Read that function's logs; audit-trigger's lag leaves changes unaudited until it catches up, and an event past Pub/Sub's retention is lost (compare with GET /audit/verify)."
    mime_type = "text/markdown"
  }

  lifecycle {
    precondition {
      condition     = local.alerts_reach_someone
      error_message = local.no_channel_error
    }
  }
}

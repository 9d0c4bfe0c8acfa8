# Firestore events to the event functions through Eventarc. A function takes one trigger of
# its own, so each event function is deployed without one and gets one Eventarc trigger per
# collection it follows, pointing at its Cloud Run service. The audited collections come from
# generated/code.json, made from shared.audit.rules.AUDITED_COLLECTIONS by
# `python -m tools.terraform_inputs` (a test fails when it is stale): code and triggers agree.
locals {
  code = jsondecode(file("${path.module}/generated/code.json"))

  event_collections = {
    audited = local.code.audited_collections
    outbox  = [local.code.outbox_collection]
  }

  event_functions = { for name, f in local.fn : name => f if f.trigger == "event" }

  event_triggers = merge([
    for name, f in local.event_functions : {
      for collection in local.event_collections[f.on] : "${name}-${lower(collection)}" => {
        function   = name
        collection = collection
        event_type = "google.cloud.firestore.document.v1.${f.event}"
      }
    }
  ]...)
}

# Each event function's triggers sign in as their own account (accounts.tf), which may invoke
# only that function.
resource "google_project_iam_member" "trigger_receiver" {
  for_each = local.event_functions
  project  = var.project_id
  role     = "roles/eventarc.eventReceiver"
  member   = "serviceAccount:${google_service_account.trigger[each.key].email}"
}

resource "google_cloud_run_service_iam_member" "trigger_invoker" {
  for_each = local.event_functions
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger[each.key].email}"
}

resource "google_eventarc_trigger" "firestore" {
  for_each = local.event_triggers
  name     = each.key
  # Firestore events are delivered in the database's location.
  location        = var.firestore_location
  service_account = google_service_account.trigger[each.value.function].email
  # The code reads the protobuf DocumentEventData (shared/audit/events.py), as dev/relay.py
  # sends it locally.
  event_data_content_type = "application/protobuf"

  matching_criteria {
    attribute = "type"
    value     = each.value.event_type
  }
  matching_criteria {
    attribute = "database"
    value     = google_firestore_database.main.name
  }
  # Top-level documents of the collection; no audited collection is a subcollection.
  matching_criteria {
    attribute = "document"
    operator  = "match-path-pattern"
    value     = "${each.value.collection}/{document}"
  }

  destination {
    cloud_run_service {
      service = google_cloudfunctions2_function.fn[each.value.function].name
      region  = var.region
    }
  }

  depends_on = [
    google_project_iam_member.trigger_receiver,
    google_cloud_run_service_iam_member.trigger_invoker,
  ]
}

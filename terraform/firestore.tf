resource "google_firestore_database" "main" {
  name                              = "(default)"
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  app_engine_integration_mode       = "DISABLED"
  # Never deleted by Terraform: removing it from the configuration leaves it in place.
  deletion_policy = "ABANDON"

  lifecycle {
    prevent_destroy = true
  }

  depends_on = [google_project_service.api]
}

# Backups beyond point-in-time recovery's 7 days: a daily one kept a week and a weekly one
# kept 14 weeks (the longest each recurrence allows), in the database's location. They recover
# from what PITR cannot reach (a corruption noticed late, a bad migration a month old); they
# are not the archive of the records' retention, which the records themselves keep. Restoring
# makes a new database (docs/runbooks/roll-back.md). A backup outlives its schedule.
resource "google_firestore_backup_schedule" "daily" {
  project   = var.project_id
  database  = google_firestore_database.main.name
  retention = "604800s" # 7 days

  daily_recurrence {}
}

resource "google_firestore_backup_schedule" "weekly" {
  project   = var.project_id
  database  = google_firestore_database.main.name
  retention = "8467200s" # 14 weeks

  weekly_recurrence {
    day = "SUNDAY"
  }
}

# Every composite index of firestore.indexes.json (through generated/code.json, under a
# stable key: an index cannot change in place, so a changed one is a new key).
resource "google_firestore_index" "index" {
  for_each    = local.code.firestore_indexes
  database    = google_firestore_database.main.name
  collection  = each.value.collection
  query_scope = each.value.query_scope

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path   = fields.value.field_path
      order        = fields.value.order
      array_config = fields.value.array_config
    }
  }
}

# firestore.indexes.json's field overrides: TTL policies (sessions, idempotency keys expire
# by `expiresAt`) and their single-field indexes.
resource "google_firestore_field" "field" {
  for_each   = local.code.firestore_fields
  database   = google_firestore_database.main.name
  collection = each.value.collection
  field      = each.value.field

  dynamic "ttl_config" {
    for_each = each.value.ttl ? [true] : []
    content {}
  }

  index_config {
    dynamic "indexes" {
      for_each = each.value.indexes
      content {
        query_scope  = indexes.value.query_scope
        order        = indexes.value.order
        array_config = indexes.value.array_config
      }
    }
  }
}

# firestore.rules (clients get no direct access), the file the emulator loads locally.
resource "google_firebaserules_ruleset" "firestore" {
  source {
    files {
      name    = "firestore.rules"
      content = file("${path.module}/../firestore.rules")
    }
  }

  # A release must always point at a ruleset: make the new one before the old one goes.
  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_firestore_database.main]
}

resource "google_firebaserules_release" "firestore" {
  name         = "cloud.firestore"
  ruleset_name = "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore.name}"
}

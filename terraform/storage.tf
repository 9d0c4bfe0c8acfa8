# The functions' source: one content-hashed zip per function and version (functions.tf).
resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:Holds only build inputs written by Terraform; the Data Access audit logs of audit_logs.tf record who wrote and read them, a usage-log bucket would duplicate that
  name                        = "${var.project_id}-function-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Old bundles are only needed to roll back; a rollback rebuilds the same content-hashed
  # zip from its commit anyway, so replaced ones need not be kept long.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

# The audit log's exports (shared/audit/export.py): sealed ranges, their signed checkpoints
# and the public keys, kept for the retention period whatever happens to Firestore. The
# retention policy refuses every delete and overwrite before an object's time is up; locked,
# nobody (the project's owners included) can shorten it.
resource "google_storage_bucket" "audit_export" {
  #checkov:skip=CKV_GCP_62:The Data Access audit logs of audit_logs.tf record who wrote and read these objects; a usage-log bucket would duplicate that
  #checkov:skip=CKV_GCP_78:The retention policy already refuses every overwrite and delete, so there is never a noncurrent version to keep; the export only creates objects
  name                        = "${var.project_id}-audit-export"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  retention_policy {
    retention_period = var.audit_retention_days * 86400
    is_locked        = var.audit_retention_locked
  }

  lifecycle {
    precondition {
      condition     = var.audit_retention_locked || var.throwaway_project
      error_message = "audit_retention_locked = false is for a throwaway project only (throwaway_project = true): production keeps its audit exports under a locked policy."
    }
  }

  depends_on = [google_project_service.api]
}

# The audit function creates objects and reads them back (an export resumed half-way compares
# what is there); it can neither delete nor replace one.
resource "google_storage_bucket_iam_member" "audit_export" {
  for_each = toset(["roles/storage.objectCreator", "roles/storage.objectViewer"])
  bucket   = google_storage_bucket.audit_export.name
  role     = each.value
  member   = "serviceAccount:${google_service_account.fn["audit"].email}"
}

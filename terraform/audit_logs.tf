# Data Access audit logs (Cloud Audit Logs) for the services holding health data and secrets:
# who read or wrote which document, secret version or object, and when, whoever they are (a
# function's account, a person in the console, the deployer). Admin Activity logs are always
# on; these are off by default. The code's own audit log (shared/audit) records what people
# read through the backend; these also record what bypasses it: a direct Firestore read, a
# secret's value accessed, an audit export downloaded.
#
# Every Firestore read by the functions is logged too, which is most of the volume (Cloud
# Logging bills ingestion past its free allotment): exempting the functions' accounts would
# cut it, and would also hide what a compromised function reads, so none is exempted.
# Entries go to the _Default log bucket (30 days); route them to a bucket of longer retention
# if the records' regime asks for it. A person applies this (tools/plan_guard.py): the
# deployer can turn no logging off.
locals {
  data_access_logs = {
    # Firestore: this name configures firestore.googleapis.com's entries too.
    "datastore.googleapis.com"     = ["ADMIN_READ", "DATA_READ", "DATA_WRITE"]
    "secretmanager.googleapis.com" = ["ADMIN_READ", "DATA_READ", "DATA_WRITE"]
    # The audit exports, the functions' source and the Terraform state and settings.
    "storage.googleapis.com" = ["ADMIN_READ", "DATA_READ", "DATA_WRITE"]
  }
}

resource "google_project_iam_audit_config" "data_access" {
  for_each = local.data_access_logs
  project  = var.project_id
  service  = each.key

  dynamic "audit_log_config" {
    for_each = toset(each.value)
    content {
      log_type = audit_log_config.value
    }
  }
}

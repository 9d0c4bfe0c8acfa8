# Cloud Build deploys as the `deployer` account (accounts.tf, cloudbuild.yaml), never the
# project's default one. The first `terraform apply` is run by a person (docs/guides/deploy.md,
# "From zero"); every later one by it, except a change that widens what it may do or grant: its
# own roles, the roles it may grant, the custom roles (functions.tf, below), the service
# accounts and who may act as them (accounts.tf), the audit log configuration (audit_logs.tf)
# and the trigger below, which a person applies (docs/guides/deploy.md, "What only a person
# applies"): the deployer cannot grant itself more, nor write a permission into a role.
locals {
  # What applying this configuration takes, and nothing project-wide beyond it: no owner or
  # editor, and acting as other accounts only on the accounts it deploys (accounts.tf).
  build_roles = toset([
    "roles/cloudfunctions.developer",
    "roles/run.admin", # invoker bindings on the functions' services
    # Reads the service accounts and who may act as them (accounts.tf), which a person makes
    # and grants: no iam.serviceAccounts.setIamPolicy, create or delete, so the deployer can
    # give itself no actAs or token creation on any account (the Firebase Admin SDK's, the
    # default compute one) beyond the deployed accounts' actAs granted there.
    "roles/iam.serviceAccountViewer",
    "roles/iam.roleViewer",   # reads the custom roles (it cannot change them)
    "roles/cloudtasks.admin", # queues and their enqueuers
    "roles/cloudscheduler.admin",
    "roles/eventarc.admin",
    "roles/firebaserules.admin",
    "roles/firebasehosting.admin",          # firebase deploy --only hosting
    "roles/logging.logWriter",              # the build's own logs
    "roles/monitoring.editor",              # alert policies and channels
    "roles/serviceusage.serviceUsageAdmin", # enabling the APIs
  ])
}

# Secret Manager, Firestore and Logging: no predefined role manages them without their data
# (secretmanager.admin reads every secret's value, datastore.owner every document, so every
# patient's records). These roles hold what applying secrets.tf and firestore.tf takes: the
# secrets and their metadata, never a value (no secretmanager.versions.access; values are
# added by hand) and never who may read one (no secretmanager.secrets.setIamPolicy: whoever may
# set a secret's policy may make itself its accessor; a person grants the functions theirs,
# secrets.tf); the database's settings, indexes
# and field overrides (TTL policies) and the operations that build them, never a document (no
# datastore.entities.*, no export or import). Custom roles: a person applies them.
locals {
  deployer_roles = {
    secrets = {
      title = "Alo Doktor deployer: secrets without their values"
      permissions = [
        "secretmanager.secrets.create",
        "secretmanager.secrets.delete",
        "secretmanager.secrets.get",
        "secretmanager.secrets.getIamPolicy",
        "secretmanager.secrets.list",
        "secretmanager.secrets.update",
        "secretmanager.versions.get", # a version's metadata (state, time), not its value
        "secretmanager.versions.list",
      ]
    }
    firestore = {
      title = "Alo Doktor deployer: Firestore administration without data"
      permissions = [
        # Reading a database is getMetadata; datastore.databases.get only begins and rolls
        # back transactions, which applying nothing here needs.
        "datastore.databases.getMetadata",
        "datastore.databases.update",
        "datastore.indexes.create", # composite indexes, and field overrides (TTL policies)
        "datastore.indexes.delete",
        "datastore.indexes.get",
        "datastore.indexes.list",
        "datastore.indexes.update",
        "datastore.operations.get", # index builds and TTL changes are long-running operations
        "datastore.operations.list",
        # The backup schedules (firestore.tf); not the backups, which it can neither read,
        # restore nor delete.
        "datastore.backupSchedules.create",
        "datastore.backupSchedules.delete",
        "datastore.backupSchedules.get",
        "datastore.backupSchedules.list",
        "datastore.backupSchedules.update",
      ]
    }
    # The log-based metrics of monitoring.tf, and nothing else of Logging's configuration:
    # roles/logging.configWriter would also let it add exclusions and sinks, and so drop or
    # divert the Data Access audit logs (audit_logs.tf).
    # The buckets (storage.tf), not their objects nor who may read them: roles/storage.admin
    # would read every audit export (storage.objects.get) and could grant itself that
    # (storage.buckets.setIamPolicy). Its objects are the state's and the functions' source,
    # granted on those two buckets alone (build_objects below).
    storage = {
      title = "Alo Doktor deployer: buckets without their objects"
      permissions = [
        "storage.buckets.create",
        "storage.buckets.delete",
        "storage.buckets.get",
        "storage.buckets.getIamPolicy",
        "storage.buckets.list",
        "storage.buckets.update",
      ]
    }
    logs = {
      title = "Alo Doktor deployer: log-based metrics"
      permissions = [
        "logging.logMetrics.create",
        "logging.logMetrics.delete",
        "logging.logMetrics.get",
        "logging.logMetrics.list",
        "logging.logMetrics.update",
      ]
    }
  }
}

resource "google_project_iam_custom_role" "deployer" {
  for_each    = local.deployer_roles
  project     = var.project_id
  role_id     = "alodoktor.deployer_${each.key}"
  title       = each.value.title
  description = "What the deployer's terraform apply takes of ${each.key}, without reading data (terraform/ci.tf)"
  permissions = each.value.permissions
}

resource "google_project_iam_member" "build" {
  for_each = local.build_roles
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.build.email}"
}

resource "google_project_iam_member" "build_custom" {
  for_each = google_project_iam_custom_role.deployer
  project  = var.project_id
  role     = each.value.name
  member   = "serviceAccount:${google_service_account.build.email}"
}

# Project IAM admin only for the roles this configuration grants to the functions, builder
# and trigger accounts (every other google_project_iam_member: a test holds the list to
# them): never owner, editor, a token creator or one of its own roles. The custom roles are
# named in full (projects/<project>/roles/<id>), as IAM compares them.
locals {
  grantable_roles = sort(distinct(concat(
    [for grant in google_project_iam_member.fn : grant.role],
    [for grant in google_project_iam_member.builder : grant.role],
    [for grant in google_project_iam_member.trigger_receiver : grant.role],
  )))
}

resource "google_project_iam_member" "build_iam_admin" {
  project = var.project_id
  role    = "roles/resourcemanager.projectIamAdmin"
  member  = "serviceAccount:${google_service_account.build.email}"

  condition {
    title       = "only-this-configuration-roles"
    description = "Grants and revokes only the project roles terraform/ grants to the functions, builder and trigger accounts"
    expression  = "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(${jsonencode(local.grantable_roles)})"
  }
}

# The objects the deployer reads and writes, bucket by bucket: the Terraform state and the
# environment's settings (the state bucket, made by a person: docs/guides/deploy.md, "From
# zero") and the functions' bundles. Never the audit exports'.
locals {
  state_bucket = "${var.project_id}-tfstate"
}

resource "google_storage_bucket_iam_member" "build_objects" {
  for_each = {
    state  = local.state_bucket
    source = google_storage_bucket.source.name
  }
  bucket = each.value
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.build.email}"
}

# Builds of the main branch only; the repository is connected to Cloud Build once by hand.
resource "google_cloudbuild_trigger" "main" {
  count           = var.github_owner == "" ? 0 : 1
  name            = "alodoktor-main"
  location        = "global"
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.build.id

  github {
    owner = var.github_owner
    name  = var.github_repo
    push {
      branch = "^main$"
    }
  }

  # Every other setting comes from the environment's file in that bucket (cloudbuild.yaml).
  substitutions = {
    _TF_STATE_BUCKET = local.state_bucket
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_custom,
    google_project_iam_member.build_iam_admin,
    google_storage_bucket_iam_member.build_objects,
  ]
}

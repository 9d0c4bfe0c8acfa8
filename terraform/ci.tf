# Cloud Build deploys as the `deployer` account (accounts.tf, cloudbuild.yaml), never the
# project's default one. The first `terraform apply` is run by a person (README "Deploy"); every
# later one by it, except a change that widens what it may do or grant: its own roles, the
# roles it may grant, the custom roles (functions.tf), the service accounts and who may act as
# them (accounts.tf), and the trigger below, which a person applies (README "What only a person
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
    "roles/iam.roleViewer",      # reads the custom roles (it cannot change them)
    "roles/storage.admin",       # the source bucket, the state bucket and the environment's settings
    "roles/secretmanager.admin", # secrets and who may read them
    "roles/cloudtasks.admin",    # queues and their enqueuers
    "roles/cloudscheduler.admin",
    "roles/eventarc.admin",
    "roles/datastore.owner", # the database, indexes and TTL policies
    "roles/firebaserules.admin",
    "roles/firebasehosting.admin",          # firebase deploy --only hosting
    "roles/logging.configWriter",           # log-based metrics
    "roles/logging.logWriter",              # the build's own logs
    "roles/monitoring.editor",              # alert policies and channels
    "roles/serviceusage.serviceUsageAdmin", # enabling the APIs
    "roles/artifactregistry.writer",        # the CI image
  ])
}

resource "google_project_iam_member" "build" {
  for_each = local.build_roles
  project  = var.project_id
  role     = each.value
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
    _TF_STATE_BUCKET = "${var.project_id}-tfstate"
  }

  depends_on = [google_project_iam_member.build, google_project_iam_member.build_iam_admin]
}

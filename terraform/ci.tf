# Cloud Build deploys with this account (cloudbuild.yaml), never the project's default one.
# The first `terraform apply` is run by a person (README "Deploy"); every later one by it,
# except a change that widens what it may do or grant: its own roles, the roles it may grant
# and the custom roles (functions.tf), which a person applies (README "What only a person
# applies"): the deployer cannot grant itself more, nor write a permission into a role.
resource "google_service_account" "build" {
  account_id   = "deployer"
  display_name = "Cloud Build: tests, then terraform apply"
}

locals {
  # What applying this configuration takes, and nothing project-wide beyond it: no owner or
  # editor, and acting as other accounts only on the accounts it deploys (below).
  build_roles = toset([
    "roles/cloudfunctions.developer",
    "roles/run.admin", # invoker bindings on the functions' services
    # Creating and deleting the functions' and invokers' accounts, and granting actAs on each
    # of them (build_act_as below, tasks_act_as in schedule.tf), takes
    # iam.serviceAccounts.setIamPolicy. No predefined role holds it for named accounts only,
    # and a grant on each account cannot exist before the account does, so this role is
    # project-wide: the deployer could grant itself actAs on any account of the project.
    # Hence the project holds no other privileged account (README "Deploy").
    "roles/iam.serviceAccountAdmin",
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

  # Deploying a function, a scheduler job or an Eventarc trigger that runs as an account
  # needs actAs on that account: granted on each of them, not on the project.
  deployed_accounts = merge(
    { for name, sa in google_service_account.fn : "fn-${name}" => sa.name },
    { for name, sa in google_service_account.trigger : "events-${name}" => sa.name },
    {
      builder   = google_service_account.builder.name
      scheduler = google_service_account.scheduler.name
      tasks     = google_service_account.tasks.name
    },
  )
}

resource "google_project_iam_member" "build" {
  #checkov:skip=CKV_GCP_49:The deployer creates and deletes the service accounts this configuration defines (iam.serviceAccountAdmin); it may act as only those, each granted on the account itself
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

resource "google_service_account_iam_member" "build_act_as" {
  for_each           = local.deployed_accounts
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.build.email}"
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

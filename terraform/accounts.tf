# Every service account of the configuration, and who may act as which. A person (Owner)
# applies this file, never CI (docs/guides/deploy.md, "What only a person applies";
# tools/plan_guard.py stops a CI plan that changes any of it): creating an account or granting
# actAs on one takes iam.serviceAccounts.setIamPolicy, and whoever holds that on an account may
# grant itself token creation on it. So the deployer holds no service account admin role: it
# reads these accounts and acts as the ones it deploys, granted here on each account.

# Cloud Build deploys with this account (ci.tf, cloudbuild.yaml).
resource "google_service_account" "build" {
  account_id   = "deployer"
  display_name = "Cloud Build: tests, then terraform apply"
}

# One identity per function, so each holds only what its own code needs (functions.tf).
resource "google_service_account" "fn" {
  for_each     = local.fn
  account_id   = "fn-${each.key}"
  display_name = "Alo Doktor function ${each.key}"
}

# Cloud Functions builds each function's image with this identity, not the project's default
# compute account (deprivileged below).
resource "google_service_account" "builder" {
  account_id   = "functions-builder"
  display_name = "Builds the functions' images"
}

# Each event function's Eventarc triggers sign in as their own account (events.tf).
resource "google_service_account" "trigger" {
  for_each     = local.event_functions
  account_id   = "events-${each.key}"
  display_name = "Eventarc triggers of ${each.key}"
}

# Cloud Scheduler's and Cloud Tasks' OIDC tokens (schedule.tf).
resource "google_service_account" "scheduler" {
  account_id   = "scheduler-invoker"
  display_name = "Cloud Scheduler's jobs"
}

resource "google_service_account" "tasks" {
  account_id   = "tasks-invoker"
  display_name = "Cloud Tasks deliveries"
}

locals {
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

resource "google_service_account_iam_member" "build_act_as" {
  for_each           = local.deployed_accounts
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.build.email}"
}

# A task carrying an OIDC token of the tasks account may be created only by a caller that may
# act as that account: granted on that one account, never project-wide.
resource "google_service_account_iam_member" "tasks_act_as" {
  for_each           = local.task_creators
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# The default compute and App Engine accounts lose the Editor role older projects gave them:
# nothing here runs as them (every function, build, job and trigger names its own account), and
# an Editor account is one that deploying code as would widen what a deploy may do.
# DEPRIVILEGE only removes that grant (the accounts stay, so a product that still needs them
# keeps working); it is never reverted on destroy.
resource "google_project_default_service_accounts" "deprivileged" {
  project        = var.project_id
  action         = "DEPRIVILEGE"
  restore_policy = "NONE"
}

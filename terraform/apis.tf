locals {
  apis = toset([
    "artifactregistry.googleapis.com", # the functions' container images
    "cloudbuild.googleapis.com",       # builds the functions, and CI
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "eventarc.googleapis.com",
    "fcm.googleapis.com",
    "firebase.googleapis.com",
    "firebasehosting.googleapis.com",
    "firebaserules.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",  # OIDC tokens for Scheduler, Tasks and Eventarc
    "identitytoolkit.googleapis.com", # Firebase Auth
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com", # Eventarc's transport for Firestore events
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "api" {
  for_each = local.apis
  service  = each.value
  # Turning an API off on destroy would break whatever else in the project uses it.
  disable_on_destroy = false
}

# One environment's settings: every variable of terraform/variables.tf (but bundles_dir, where
# the build puts the bundles, which cloudbuild.yaml passes itself), in one file that the
# first deploy and every Cloud Build deploy read (docs/guides/deploy.md). Its copy for a project lives
# at gs://<project>-tfstate/environment.tfvars (the state bucket: versioned, so every change is
# kept); CI downloads it to build/environment.tfvars and plans with
# -var-file=../build/environment.tfvars, after `python -m tools.terraform_settings check`
# refuses a file missing any variable. It holds no secret: values go to Secret Manager only.
#
# Start from this file, change what is marked, upload, apply. A variable added to
# variables.tf must be added here (a test fails otherwise) and to every environment's file
# (CI's check fails otherwise), so a deploy never falls back to a default nobody chose.

# The Google Cloud (and Firebase) project. CHANGE.
project_id = "alodoktor-prod"

# Region of the functions, Cloud Tasks and Cloud Scheduler; firebase.json's rewrites name it.
region = "europe-west1"

# Location of the Firestore database (and its Eventarc triggers). Fixed once the database exists.
firestore_location = "eur3"

# Origins of the web front end, allowed by CORS with credentials; the first is where notices
# link to. CHANGE.
frontend_origins = ["https://app.alodoktor.com"]

# PayPal's API: the sandbox, or https://api-m.paypal.com for real money. CHANGE for production.
paypal_api_base = "https://api-m.sandbox.paypal.com"

# The SMTP relay notices are sent through (STARTTLS); its credentials are secrets. CHANGE.
smtp_host = "smtp.example.com"

# From: of every e-mail.
mail_from = "Alo Doktor <no-reply@alodoktor.com>"

# The Twilio number (or messaging service) SMS are sent from. CHANGE.
twilio_from = "+15005550006"

# Extra environment for every function (docs/reference/settings.md lists each setting).
settings = {}

# Secret id -> the version functions read; pin a number while rotating
# (docs/runbooks/rotate-a-secret.md).
secret_versions = {}

# Where alerts are e-mailed: required unless throwaway_project. CHANGE.
alert_email = "oncall@alodoktor.com"

# The GitHub repository Cloud Build deploys from (connected once by hand); empty: no trigger.
# Once CI runs, emptying these deletes the trigger that runs it. CHANGE.
github_owner = ""
github_repo  = ""

# How long the audit exports are kept (at least 2192 days, six years).
audit_retention_days = 2192

# Lock the audit exports' retention policy (irreversible). false only in a throwaway project.
audit_retention_locked = true

# A test or demo project: alerts may notify nobody, the audit retention may stay unlocked.
throwaway_project = false

variable "project_id" {
  description = "The Google Cloud (and Firebase) project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, Cloud Tasks and Cloud Scheduler. firebase.json's rewrites name the same region (a test holds them equal)."
  type        = string
  default     = "europe-west1"
}

variable "firestore_location" {
  description = "Location of the Firestore database, and so of its Eventarc triggers (eur3, nam5 or a region). Fixed once the database exists."
  type        = string
  default     = "eur3"
}

variable "frontend_origins" {
  description = "Origins of the web front end (https://app.example.com), allowed by CORS with credentials. The Firebase Hosting site serves /api/<function>/ on the same origin."
  type        = list(string)

  validation {
    condition     = length(var.frontend_origins) > 0 && alltrue([for o in var.frontend_origins : can(regex("^https://[^/]+$", o))])
    error_message = "At least one origin, each https://host[:port] with no path and no trailing slash; the first is where notices link to."
  }
}

variable "bundles_dir" {
  description = "Directory written by `python -m tools.deploy_bundles` (zips and manifest.json); relative paths are from terraform/."
  type        = string
  default     = "../build/bundles"
}

variable "paypal_api_base" {
  description = "PayPal's API base. The sandbox unless production is chosen on purpose."
  type        = string
  default     = "https://api-m.sandbox.paypal.com"
}

variable "smtp_host" {
  description = "The SMTP relay notify sends e-mail through (port SMTP_PORT, STARTTLS); its credentials are the smtp-username and smtp-password secrets."
  type        = string
  default     = ""
}

variable "mail_from" {
  description = "From: of every e-mail."
  type        = string
  default     = "Alo Doktor <no-reply@alodoktor.com>"
}

variable "twilio_from" {
  description = "The Twilio number (or messaging service) SMS are sent from."
  type        = string
  default     = ""
}

variable "settings" {
  description = "Extra environment for every function (docs/reference/settings.md), e.g. { SESSION_IDLE_SECONDS = \"1800\" }."
  type        = map(string)
  default     = {}
}

variable "secret_versions" {
  description = "Secret id -> the version functions read (a number to pin, or latest). Rotating a secret is adding a version and naming it here (docs/runbooks/rotate-a-secret.md)."
  type        = map(string)
  default     = {}
}

variable "alert_email" {
  description = "Where alerts are e-mailed. Required unless throwaway_project: an alert that notifies nobody is refused (monitoring.tf)."
  type        = string
  default     = ""
}

variable "throwaway_project" {
  description = "A project for tests or demos, destroyed after: alerts may notify nobody and the audit exports' retention may stay unlocked. Never true in production."
  type        = bool
  default     = false
}

variable "github_owner" {
  description = "GitHub owner of the repository Cloud Build deploys from (connected once by hand); empty: no trigger is made."
  type        = string
  default     = ""
}

variable "github_repo" {
  description = "GitHub repository name Cloud Build deploys from."
  type        = string
  default     = ""
}

variable "audit_retention_days" {
  description = "How long the audit export bucket keeps every object (health records: six years, counting leap days)."
  type        = number
  default     = 2192

  validation {
    condition     = var.audit_retention_days >= 2192
    error_message = "Audit exports are kept at least six years (2192 days)."
  }
}

variable "audit_retention_locked" {
  description = "Lock the audit export bucket's retention policy. Irreversible: a locked policy can be lengthened, never shortened or removed. false only with throwaway_project (storage.tf refuses it otherwise)."
  type        = bool
  default     = true
}

output "function_urls" {
  description = "Each function's Cloud Run URL (*.run.app)."
  value       = { for name, f in google_cloudfunctions2_function.fn : name => f.url }
}

output "function_audience_urls" {
  description = "Each function's cloudfunctions.net URL: the OIDC audience Scheduler and Tasks use."
  value       = { for name in keys(local.fn) : name => "${local.functions_base_url}/${name}" }
}

output "functions_base_url" {
  description = "FUNCTIONS_BASE_URL given to every function."
  value       = local.functions_base_url
}

output "function_service_accounts" {
  description = "The service account each function runs as."
  value       = { for name, sa in google_service_account.fn : name => sa.email }
}

output "source_bucket" {
  description = "Bucket holding the functions' content-hashed bundles."
  value       = google_storage_bucket.source.name
}

output "build_service_account" {
  description = "The service account Cloud Build deploys with."
  value       = google_service_account.build.email
}

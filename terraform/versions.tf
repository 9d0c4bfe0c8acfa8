terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    # 7.x only: a major release renames and removes arguments, so it is taken on purpose.
    google = {
      source  = "hashicorp/google"
      version = ">= 7.0.0, < 8.0.0"
    }
  }

  # State lives in a GCS bucket made once by hand (docs/guides/deploy.md, "From zero", step 2);
  # its name is given at init: terraform init -backend-config=bucket=<project>-tfstate
  backend "gcs" {
    prefix = "alodoktor"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    app = "alodoktor"
  }
}

"""Stop a CI deploy whose plan widens what the deployer may do: a person applies those.

    terraform show -json tfplan > ../build/tfplan.json
    python -m tools.plan_guard build/tfplan.json

The `deployer` account (terraform/ci.tf) may grant only the project roles the configuration
gives other accounts, and may read the custom roles but not write them, so that a build
cannot give itself more; it neither creates service accounts nor grants actAs on them, nor
changes the trigger that runs it, nor who may read a secret or a bucket. A plan that changes
its own grants, a custom role, a service account or who may act as one, the trigger, or a
secret's or bucket's readers would fail half way through the apply on a permission error;
this says so before anything is applied, and what to do (docs/guides/deploy.md, "What only a
person applies").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Resources only a person (Owner) may change: the deployer's own project roles, which carry
# the list of roles it may grant, the permissions inside the custom roles, the service
# accounts and who may act as them (terraform/accounts.tf: whoever may set an account's IAM
# policy may mint its tokens), the default accounts' privileges, the Data Access audit logs
# (terraform/audit_logs.tf: CI may turn no logging off), and the Cloud Build trigger
# (it runs builds as the deployer: the deployer holds no Cloud Build role, and may not act as
# itself), and who may read a secret's value or a bucket's objects (terraform/secrets.tf,
# storage.tf, ci.tf: whoever may set a secret's or a bucket's policy may make itself its
# reader).
PERSON_ONLY_TYPES = {
    "google_project_iam_custom_role",
    "google_service_account",
    "google_service_account_iam_member",
    "google_project_default_service_accounts",
    "google_project_iam_audit_config",
    "google_cloudbuild_trigger",
    "google_secret_manager_secret_iam_member",
    "google_storage_bucket_iam_member",
}
PERSON_ONLY_ADDRESSES = {
    "google_project_iam_member.build",
    "google_project_iam_member.build_custom",
    "google_project_iam_member.build_iam_admin",
}


def _changes(plan: dict[str, Any]) -> list[tuple[str, list[str]]]:
    found = []
    for change in plan.get("resource_changes", []):
        actions = change.get("change", {}).get("actions", [])
        if actions in (["no-op"], ["read"]) or change.get("mode") == "data":
            continue
        base = f"{change['type']}.{change['name']}"
        if change["type"] in PERSON_ONLY_TYPES or base in PERSON_ONLY_ADDRESSES:
            found.append((change["address"], actions))
    return found


def person_only(plan: dict[str, Any]) -> list[str]:
    """The planned changes the deployer may not make, as `address (actions)`."""
    return [f"{address} ({', '.join(actions)})" for address, actions in _changes(plan)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tools.plan_guard <plan.json>", file=sys.stderr)
        return 2
    found = person_only(json.loads(Path(args[0]).read_text()))
    if not found:
        return 0
    print(
        "This plan changes what the deployer may do or grant, which only a person applies "
        "(docs/guides/deploy.md, 'What only a person applies'): with Owner, at this commit, run "
        "`terraform apply -var-file=../build/environment.tfvars` in terraform/, then run "
        "this build again.",
        file=sys.stderr,
    )
    for line in found:
        print(f"  {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

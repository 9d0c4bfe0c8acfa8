"""terraform/, firebase.json and cloudbuild.yaml, held to the code they deploy.

The Google provider cannot be downloaded here, so `terraform validate` and `plan` cannot run
(Makefile `deploy-check` runs what can: fmt, checkov, the Cloud Build schema). These tests
parse the HCL with python-hcl2 (tools/hcl_json.py, run by .venv-iac's interpreter: checkov's
own `hcl2` module would shadow it in one environment) and check what a wrong deploy would get
wrong: a function folder without Terraform, a role the code does not need or lacks, a secret
granted to the wrong function, an audited collection without its trigger, an index or a TTL
policy not provisioned, a scheduled route without its job, a rewrite missing from Hosting, an
alert matching a log line the code never writes or notifying nobody, a variable a CI deploy
would reset to its default, a deployer that may grant more than the configuration does.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, through schemathesis

from shared.audit import events as audit_events
from shared.audit.rules import AUDITED_COLLECTIONS
from shared.platform.outbox import NOTIFICATIONS
from shared.web import policy
from tools import bundle, code_facts, schedules, terraform_inputs, terraform_settings

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
IAC_PYTHON = ROOT / ".venv-iac" / "bin" / "python"

# Roles no deploy needs: basic roles, and acting as or minting tokens for every account.
FORBIDDEN_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
FORBIDDEN_PROJECT_ROLES = {
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.workloadIdentityUser",
}
# What the custom roles may hold: Identity Platform's user permissions (access-control table)
# and FCM's send; never Auth's configuration (firebaseauth.configs.*) or FCM's topics.
AUTH_USER_PERMISSIONS = {
    "firebaseauth.users.create",
    "firebaseauth.users.createSession",
    "firebaseauth.users.delete",
    "firebaseauth.users.get",
    "firebaseauth.users.sendEmail",
    "firebaseauth.users.update",
}
FCM_SEND = "cloudmessaging.messages.create"


def _x(expr: str) -> str:
    """An expression without whitespace, to compare what python-hcl2 reconstructs."""
    return re.sub(r"\s+", "", expr)


@dataclass
class Config:
    files: dict[str, Any]
    resources: dict[tuple[str, str], dict[str, Any]]
    locals: dict[str, Any]
    variables: dict[str, dict[str, Any]]

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        assert (kind, name) in self.resources, f"terraform/ has no {kind}.{name}"
        return self.resources[(kind, name)]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}


@cache
def _config() -> Config:
    if not IAC_PYTHON.exists():
        pytest.fail(
            "python-hcl2's venv is missing: run `make .venv-iac/.installed` (make test does)"
        )
    result = subprocess.run(
        [str(IAC_PYTHON), str(ROOT / "tools" / "hcl_json.py"), str(TERRAFORM)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"python-hcl2 could not parse terraform/:\n{result.stderr}"
    files: dict[str, Any] = json.loads(result.stdout)
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    local_values: dict[str, Any] = {}
    variables: dict[str, dict[str, Any]] = {}
    for doc in files.values():
        for block in doc.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    assert (kind, name) not in resources, f"{kind}.{name} defined twice"
                    resources[(kind, name)] = body
        for block in doc.get("locals", []):
            local_values.update({k: v for k, v in block.items() if not k.startswith("__")})
        for block in doc.get("variable", []):
            variables.update(block)
    return Config(files, resources, local_values, variables)


@pytest.fixture(scope="module")
def tf() -> Config:
    return _config()


@dataclass(frozen=True)
class _ByTrigger:
    """A default that depends on the trigger: `try(f.x, f.trigger == "http" ? a : b)`."""

    trigger: str
    then: Any
    otherwise: Any

    def pick(self, trigger: str) -> Any:
        return self.then if trigger == self.trigger else self.otherwise


def _literal(text: str) -> Any:
    literal: dict[str, Any] = {"false": False, "true": True, "null": None, "[]": [], "{}": {}}
    return literal[text] if text in literal else json.loads(text)


def _defaults(tf: Config) -> dict[str, Any]:
    """The defaults `local.fn` fills in (`x = try(f.x, <default>)`), read from the HCL; a
    default by trigger is a _ByTrigger."""
    found = dict(re.findall(r"(\w+)=(?:to\w+\()?try\(f\.\1,([^()]*)\)", _x(tf.locals["fn"])))
    assert found, "local.fn does not fill in defaults with try(f.<attr>, <default>)"
    defaults: dict[str, Any] = {}
    for key, text in found.items():
        by_trigger = re.fullmatch(r'f\.trigger=="(\w+)"\?([^?:]+):([^?:]+)', text)
        defaults[key] = (
            _ByTrigger(by_trigger[1], _literal(by_trigger[2]), _literal(by_trigger[3]))
            if by_trigger
            else _literal(text)
        )
    return defaults


def _table(tf: Config) -> dict[str, dict[str, Any]]:
    """locals.functions with every attribute filled in, as `local.fn` does."""
    defaults = _defaults(tf)

    def resolved(value: Any) -> Any:
        # An attribute may name another local (`env = local.notify_env`).
        match = re.fullmatch(r"\$\{local\.(\w+)\}", value) if isinstance(value, str) else None
        return tf.locals[match.group(1)] if match else value

    def filled(entry: dict[str, Any]) -> dict[str, Any]:
        trigger = entry["trigger"]
        base = {k: d.pick(trigger) if isinstance(d, _ByTrigger) else d for k, d in defaults.items()}
        return {**base, **{k: resolved(v) for k, v in entry.items()}}

    return {name: filled(entry) for name, entry in tf.locals["functions"].items()}


def _rules() -> dict[tuple[str, str, str], policy.Rule]:
    return dict(policy.POLICY)


def _services(rule: policy.Rule) -> set[str]:
    return {str(s) for s in getattr(rule, "services", frozenset())}


def _comments(body: Any) -> Iterator[str]:
    if isinstance(body, dict):
        for key, value in body.items():
            if key in ("__comments__", "__inline_comments__"):
                yield from (c["value"] for c in value)
            else:
                yield from _comments(value)
    elif isinstance(body, list):
        for item in body:
            yield from _comments(item)


def _strings(body: Any) -> Iterator[str]:
    if isinstance(body, str):
        yield body
    elif isinstance(body, dict):
        for key, value in body.items():
            if not key.startswith("__"):
                yield from _strings(value)
    elif isinstance(body, list):
        for item in body:
            yield from _strings(item)


# --- every function folder, and nothing else ---------------------------------------------


def test_every_function_folder_has_exactly_one_table_entry(tf: Config) -> None:
    folders = set(bundle.function_names())
    table = set(tf.locals["functions"])
    missing = sorted(folders - table)
    assert not missing, (
        f"functions/{missing[0]} has no entry in locals.functions (terraform/functions.tf): "
        f"add one ({', '.join(missing)} missing); `python -m tools.code_facts` says what it needs"
    )
    orphans = sorted(table - folders)
    assert not orphans, f"terraform/functions.tf deploys {orphans}, which have no functions/ folder"


def test_each_entry_becomes_a_function_with_its_own_account(tf: Config) -> None:
    fn = tf.resource("google_cloudfunctions2_function", "fn")
    account = tf.resource("google_service_account", "fn")
    assert _x(tf.locals["fn"]).startswith("${{forname,finlocal.functions:")
    assert fn["for_each"] == account["for_each"] == "${local.fn}"
    assert account["account_id"] == "fn-${each.key}"
    service = fn["service_config"][0]
    assert service["service_account_email"] == "${google_service_account.fn[each.key].email}"
    build = fn["build_config"][0]
    assert re.fullmatch(r"python3(1[1-9])", build["runtime"]), build["runtime"]
    assert build["entry_point"] == '${replace(each.key, "-", "_")}'  # = tools.bundle.target_of
    for name in tf.locals["functions"]:
        # Service account ids: 6-30 characters, lowercase, digits and hyphens.
        assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", f"fn-{name}"), name
        assert bundle.target_of(name) == name.replace("-", "_")


def test_table_entries_are_well_formed(tf: Config) -> None:
    known = set(_defaults(tf)) | {"trigger"}
    for name, entry in _table(tf).items():
        unknown = set(tf.locals["functions"][name]) - known
        assert not unknown, f"{name}: unknown attributes {unknown} (local.fn drops them)"
        assert entry["trigger"] in ("http", "event"), name
        if entry["trigger"] == "event":
            assert entry["on"] in tf.locals["event_collections"], name
            assert entry["event"] in ("written", "created", "updated", "deleted"), name
            assert not entry["public"], f"{name}: an event function is never public"
        assert set(entry["secrets"]) <= set(tf.locals["secrets"]), name
        assert set(entry["queues"]) <= set(tf.locals["queues"]), name
        assert 0 <= entry["min_instances"] <= entry["max_instances"], name


# --- least privilege, derived from the code ------------------------------------------------


@pytest.mark.parametrize("name", bundle.function_names())
def test_grants_are_what_the_code_needs(tf: Config, name: str) -> None:
    if name not in tf.locals["functions"]:
        pytest.fail(f"functions/{name} has no entry in locals.functions (terraform/functions.tf)")
    entry = _table(tf)[name]
    needs = code_facts.needs(name)
    where = f"terraform/functions.tf, {name!r}"

    assert entry["trigger"] == ("http" if needs.is_http else "event"), where
    generated = json.loads(terraform_inputs.OUTPUT.read_text())["function_permissions"]
    assert generated.get(name, []) == needs.permissions, (
        f"terraform/generated/code.json gives {name} {generated.get(name, [])}, its code needs "
        f"{needs.permissions} (its Auth calls: {needs.auth_calls or 'none'}; push: "
        f"{needs.sends_push}): run `python -m tools.terraform_inputs`"
    )
    secret_env = {env: secret for secret, env in tf.locals["secrets"].items()}
    wanted = {secret_env[e] for e in needs.env if e in secret_env}
    assert set(entry["secrets"]) == wanted, (
        f"{where}: secrets = {sorted(entry['secrets'])}, the code reads {sorted(wanted)}"
    )
    assert bool(entry["queues"]) == needs.creates_tasks, (
        f"{where}: queues = {sorted(entry['queues'])}, but the code "
        f"{'creates' if needs.creates_tasks else 'creates no'} Cloud Tasks"
    )

    routes = {key: rule for key, rule in _rules().items() if key[0] == name}
    by_tasks = any("tasks" in _services(rule) for rule in routes.values())
    assert entry["tasks_worker"] == by_tasks, (
        f"{where}: tasks_worker = {entry['tasks_worker']}, the policy "
        f"{'opens' if by_tasks else 'opens no'} route to Service.TASKS"
    )
    if needs.is_http:
        # Public when a person (any role) or anyone (PUBLIC) may call a route besides the
        # OpenAPI document; a function only services call stays private.
        people = any(
            rule.roles or rule.public
            for (fn, _, path), rule in routes.items()
            if path != "/openapi.json"
        )
        assert entry["public"] == people, f"{where}: public = {entry['public']}"


def test_each_function_holds_only_its_roles(tf: Config) -> None:
    roles = _x(tf.locals["function_roles"])
    assert roles == _x(
        '${merge({for name, f in local.fn : "${name}/firestore" => '
        '{function = name, role = "roles/datastore.user"}}, '
        '{for name, p in local.code.function_permissions : "${name}/code" => '
        "{function = name, role = google_project_iam_custom_role.fn[name].name}})}"
    )
    binding = tf.resource("google_project_iam_member", "fn")
    assert binding["for_each"] == "${local.function_roles}"
    assert (
        binding["member"]
        == "serviceAccount:${google_service_account.fn[each.value.function].email}"
    )

    # Secrets: accessor on one secret for one function, for each secret in its entry.
    access = _x(tf.locals["secret_access"])
    assert access == _x(
        '${merge([for name, f in local.fn : {for s in f.secrets : "${name}/${s}" => '
        "{function = name, secret = s}}]...)}"
    )
    grant = tf.resource("google_secret_manager_secret_iam_member", "fn")
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    assert grant["secret_id"].startswith("${google_secret_manager_secret.secret[each.value.secret]")
    assert grant["member"].endswith("google_service_account.fn[each.value.function].email}")

    # Cloud Tasks: enqueuer on its queue, actAs on the tasks account only.
    enqueuer = tf.resource("google_cloud_tasks_queue_iam_member", "enqueuer")
    assert enqueuer["role"] == "roles/cloudtasks.enqueuer"
    assert enqueuer["for_each"] == "${local.queue_access}"
    act_as = tf.resource("google_service_account_iam_member", "tasks_act_as")
    assert act_as["service_account_id"] == "${google_service_account.tasks.name}"
    assert act_as["for_each"] == "${local.task_creators}"


def test_every_auth_call_has_its_documented_permission() -> None:
    calls = code_facts.AUTH_WRITES | code_facts.AUTH_READS
    # create_custom_token signs as the function's own account (IAM Credentials), which no
    # project role should grant: the code must not call it without a decision.
    assert set(code_facts.AUTH_PERMISSIONS) == calls - {"create_custom_token"}
    for call, permissions in code_facts.AUTH_PERMISSIONS.items():
        assert permissions, call
        assert set(permissions) <= AUTH_USER_PERMISSIONS, call
        if call in code_facts.AUTH_READS:
            assert permissions == ("firebaseauth.users.get",), call
        else:
            assert "firebaseauth.users.get" not in permissions, f"{call} is a write"
    assert code_facts.FCM_PERMISSIONS == (FCM_SEND,)
    assert code_facts.permissions(["get_user", "set_custom_user_claims"], sends_push=True) == [
        FCM_SEND,
        "firebaseauth.users.get",
        "firebaseauth.users.update",
    ]
    with pytest.raises(code_facts.UnknownPermission, match="create_custom_token"):
        code_facts.permissions(["create_custom_token"], sends_push=False)


def test_custom_roles_hold_exactly_what_the_code_calls(tf: Config) -> None:
    generated = json.loads(terraform_inputs.OUTPUT.read_text())["function_permissions"]
    wanted = {
        name: needs.permissions
        for name in bundle.function_names()
        if (needs := code_facts.needs(name)).permissions
    }
    assert generated == wanted, "terraform/generated/code.json is stale: run tools.terraform_inputs"
    # The code's own calls, as the functions are today: sessions and admin tools write users,
    # every function that authenticates people reads them, notify and notifications push. A
    # session is the project's own record: no Firebase session cookie (createSession) is made.
    assert set(wanted["session"]) == {
        "firebaseauth.users.get",
        "firebaseauth.users.update",
    }
    assert FCM_SEND in wanted["notify"]
    assert FCM_SEND in wanted["notifications"]
    assert "audit-trigger" not in wanted
    for name, permissions in wanted.items():
        assert set(permissions) <= AUTH_USER_PERMISSIONS | {FCM_SEND}, name
        assert name in tf.locals["functions"], name
        # Custom role ids: 3-64 of letters, digits, underscores and periods.
        assert re.fullmatch(r"[a-zA-Z0-9_.]{3,64}", f"alodoktor.{name.replace('-', '_')}")

    role = tf.resource("google_project_iam_custom_role", "fn")
    assert role["for_each"] == "${local.code.function_permissions}"
    assert role["permissions"] == "${each.value}"
    assert role["role_id"] == 'alodoktor.${replace(each.key, "-", "_")}'
    assert role["project"] == "${var.project_id}"
    # No predefined Auth or FCM role is granted any more: they hold more than the code calls.
    predefined = {
        r
        for text in _strings(tf.files)
        for r in re.findall(r"roles/(?:firebaseauth|firebasecloudmessaging|firebase)\.\w+", text)
    }
    assert not predefined, f"predefined Firebase roles granted: {predefined}"


def test_deployer_may_grant_only_the_roles_the_configuration_grants(tf: Config) -> None:
    assert "roles/resourcemanager.projectIamAdmin" not in _x(tf.locals["build_roles"])
    admin = tf.resource("google_project_iam_member", "build_iam_admin")
    assert admin["role"] == "roles/resourcemanager.projectIamAdmin"
    assert admin["member"] == "serviceAccount:${google_service_account.build.email}"
    (condition,) = admin["condition"]
    assert condition["expression"] == (
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])"
        ".hasOnly(${jsonencode(local.grantable_roles)})"
    )
    # The list names the role of every other project-level grant, and none of the deployer's.
    grantable = _x(tf.locals["grantable_roles"])
    named = set(re.findall(r"google_project_iam_member\.(\w+)", grantable))
    deployers = {
        name
        for name, body in tf.of_type("google_project_iam_member").items()
        if "google_service_account.build.email" in body["member"]
    }
    assert deployers == {"build", "build_custom", "build_iam_admin"}
    others = set(tf.of_type("google_project_iam_member")) - deployers
    assert named == others, (
        f"grantable_roles names {sorted(named)}, the grants are {sorted(others)}"
    )
    assert "roles/" not in grantable, "grantable_roles lists a role by hand: take it from the grant"
    assert not tf.of_type("google_project_iam_binding")
    # actAs only on the accounts it deploys, and the custom roles it may read, not write.
    build_roles = _x(tf.locals["build_roles"])
    assert '"roles/iam.roleViewer"' in build_roles
    assert "roles/iam.roleAdmin" not in build_roles
    act_as = tf.resource("google_service_account_iam_member", "build_act_as")
    assert act_as["for_each"] == "${local.deployed_accounts}"
    assert act_as["role"] == "roles/iam.serviceAccountUser"


# What applying each CI-applied resource of secrets.tf and firestore.tf takes (create, read,
# update, delete, and the long-running operations Firestore answers with), and what reads
# their data: the deployer's custom roles hold the first and none of the second.
DEPLOYER_NEEDS = {
    "google_secret_manager_secret": {
        "secretmanager.secrets.create",
        "secretmanager.secrets.get",
        "secretmanager.secrets.update",
        "secretmanager.secrets.delete",
    },
    # Reads only: who may read a secret is a person's to grant (plan_guard), and refreshing
    # the grants CI does not change reads their policy.
    "google_secret_manager_secret_iam_member": {"secretmanager.secrets.getIamPolicy"},
    "google_firestore_database": {
        "datastore.databases.getMetadata",
        "datastore.databases.update",
        "datastore.operations.get",
    },
    "google_firestore_index": {
        "datastore.indexes.create",
        "datastore.indexes.get",
        "datastore.indexes.delete",
        "datastore.operations.get",
    },
    "google_firestore_field": {
        "datastore.indexes.get",
        "datastore.indexes.update",
        "datastore.operations.get",
    },
    "google_firestore_backup_schedule": {
        "datastore.backupSchedules.create",
        "datastore.backupSchedules.get",
        "datastore.backupSchedules.update",
        "datastore.backupSchedules.delete",
    },
    "google_storage_bucket": {
        "storage.buckets.create",
        "storage.buckets.get",
        "storage.buckets.update",
        "storage.buckets.delete",
    },
    "google_logging_metric": {
        "logging.logMetrics.create",
        "logging.logMetrics.get",
        "logging.logMetrics.update",
        "logging.logMetrics.delete",
    },
}
DATA_READING = re.compile(
    r"secretmanager\.versions\.access|datastore\.entities\.|"
    r"datastore\.databases\.(?:export|import|get$|clone)|datastore\.backups\.|"
    r"storage\.objects\."
)
DATA_READING_ROLES = {
    # Logging's configuration: exclusions and sinks that would drop or divert audit logs.
    "roles/logging.configWriter",
    "roles/logging.admin",
    "roles/secretmanager.admin",
    "roles/secretmanager.secretAccessor",
    "roles/datastore.owner",
    "roles/datastore.user",
    "roles/datastore.viewer",
    "roles/datastore.importExportAdmin",
    # Every bucket's objects, the audit exports among them.
    "roles/storage.admin",
    "roles/storage.objectAdmin",
    "roles/storage.objectViewer",
}


def test_the_deployer_administers_secrets_and_firestore_without_reading_them(tf: Config) -> None:
    """No secret value and no document (patient data) is readable by the deployer: its Secret
    Manager and Firestore permissions are custom roles holding what applying the configuration
    takes, no more."""
    from tools import plan_guard

    build_roles = set(re.findall(r"roles/[\w.]+", _x(tf.locals["build_roles"])))
    assert not build_roles & DATA_READING_ROLES, build_roles & DATA_READING_ROLES
    assert not [
        r
        for r in build_roles
        if r.startswith(("roles/secretmanager.", "roles/datastore.", "roles/storage."))
    ]
    # Objects only of the state's bucket and the bundles', granted there: never the audit
    # exports' (personal data of everyone the log names).
    objects = tf.resource("google_storage_bucket_iam_member", "build_objects")
    assert objects["member"] == "serviceAccount:${google_service_account.build.email}"
    assert objects["bucket"] == "${each.value}"
    assert objects["for_each"] == {
        "state": "${local.state_bucket}",
        "source": "${google_storage_bucket.source.name}",
    }
    assert "google_storage_bucket_iam_member" in plan_guard.PERSON_ONLY_TYPES

    roles = tf.locals["deployer_roles"]
    held = {p for role in roles.values() for p in role["permissions"]}
    reading = sorted(p for p in held if DATA_READING.search(p))
    assert not reading, f"the deployer's custom roles read data: {reading}"
    logging_config = sorted(
        p for p in held if p.startswith("logging.") and not p.startswith("logging.logMetrics.")
    )
    assert not logging_config, f"the deployer may change what is logged: {logging_config}"
    # Whoever may set a resource's IAM policy may grant itself what reads its data (a secret's
    # accessor, say): no custom role of the deployer's sets one, and the grants on secrets are
    # a person's to apply.
    policy_setters = sorted(p for p in held if p.endswith(".setIamPolicy"))
    assert not policy_setters, f"the deployer may grant itself reading: {policy_setters}"
    assert "google_secret_manager_secret_iam_member" in plan_guard.PERSON_ONLY_TYPES
    for kind, needs in DEPLOYER_NEEDS.items():
        if not tf.of_type(kind):
            continue
        missing = sorted(needs - held)
        assert not missing, f"applying {kind} takes {missing}, which the deployer lacks"
    for name, role in roles.items():
        assert len(role["permissions"]) == len(set(role["permissions"])), name
        assert re.fullmatch(r"[a-zA-Z0-9_.]{3,64}", f"alodoktor.deployer_{name}"), name

    custom = tf.resource("google_project_iam_custom_role", "deployer")
    assert custom["for_each"] == "${local.deployer_roles}"
    assert custom["permissions"] == "${each.value.permissions}"
    grant = tf.resource("google_project_iam_member", "build_custom")
    assert grant["for_each"] == "${google_project_iam_custom_role.deployer}"
    assert grant["role"] == "${each.value.name}"
    assert grant["member"] == "serviceAccount:${google_service_account.build.email}"
    assert "google_project_iam_member.build_custom" in plan_guard.PERSON_ONLY_ADDRESSES


def test_direct_reads_of_health_data_and_secrets_are_audit_logged(tf: Config) -> None:
    """Data Access audit logs for Firestore, Secret Manager and Cloud Storage: every read and
    write, by anyone, none exempted; a person applies them, so CI cannot turn them off."""
    from tools import plan_guard

    wanted = {"ADMIN_READ", "DATA_READ", "DATA_WRITE"}
    logs = tf.locals["data_access_logs"]
    # datastore.googleapis.com configures Firestore's entries too (its audit logging docs).
    for service in ("datastore.googleapis.com", "secretmanager.googleapis.com"):
        assert set(logs.get(service, [])) == wanted, service
    assert {"DATA_READ", "DATA_WRITE"} <= set(logs.get("storage.googleapis.com", []))
    config = tf.resource("google_project_iam_audit_config", "data_access")
    assert config["for_each"] == "${local.data_access_logs}"
    assert config["project"] == "${var.project_id}"
    dynamic = config["dynamic"][0]["audit_log_config"]
    assert dynamic["for_each"] == "${toset(each.value)}"
    assert dynamic["content"][0] == {"log_type": "${audit_log_config.value}"}
    assert "exempted_members" not in json.dumps(tf.files), "an account exempted from audit logs"
    assert "google_project_iam_audit_config" in plan_guard.PERSON_ONLY_TYPES
    assert set(tf.of_type("google_project_iam_audit_config")) == {"data_access"}

    # The buckets' access-logging skips say Data Access logs record their reads: they must.
    skips = [
        line
        for line in (TERRAFORM / "storage.tf").read_text().splitlines()
        if "checkov:skip=CKV_GCP_62" in line
    ]
    assert len(skips) == len(tf.of_type("google_storage_bucket")), skips
    for line in skips:
        assert "audit_logs.tf" in line, line


# Roles with which the deployer could make or grant on service accounts, and so give itself
# actAs or token creation on any of them (the Firebase Admin SDK's, the default compute one).
ACCOUNT_ADMIN_ROLES = {
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountKeyAdmin",
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.securityAdmin",
    "roles/iam.roleAdmin",
}


def test_the_deployer_makes_no_service_account_and_grants_no_actas(tf: Config) -> None:
    """Service accounts and actAs grants are in terraform/accounts.tf, which a person applies:
    CI's plan guard stops on them, and the deployer holds no role that could make them."""
    from tools import plan_guard

    build_roles = set(re.findall(r"roles/[\w.]+", _x(tf.locals["build_roles"])))
    assert not build_roles & ACCOUNT_ADMIN_ROLES, build_roles & ACCOUNT_ADMIN_ROLES
    assert "roles/iam.serviceAccountViewer" in build_roles  # it refreshes them in its plan

    # Every account and every grant on one is in accounts.tf, and nothing else is.
    person_file = tf.files["accounts.tf"]
    in_file = {
        (kind, name)
        for block in person_file.get("resource", [])
        for kind, named in block.items()
        for name in named
    }
    for kind in ("google_service_account", "google_service_account_iam_member"):
        for name in tf.of_type(kind):
            assert (kind, name) in in_file, f"{kind}.{name} belongs in terraform/accounts.tf"
    for kind, name in in_file:
        assert kind in plan_guard.PERSON_ONLY_TYPES, (
            f"terraform/accounts.tf is applied by a person, but CI would apply {kind}.{name}"
        )
    assert {"google_service_account", "google_service_account_iam_member"} <= (
        plan_guard.PERSON_ONLY_TYPES
    )
    # No account is granted on by IAM policy or binding, which would replace grants wholesale.
    kinds = {kind for kind, _ in tf.resources}
    assert not kinds & {"google_service_account_iam_policy", "google_service_account_iam_binding"}

    # The default compute and App Engine accounts lose older projects' Editor, for good.
    default = tf.resource("google_project_default_service_accounts", "deprivileged")
    assert (default["action"], default["restore_policy"]) == ("DEPRIVILEGE", "NONE")
    assert "google_project_default_service_accounts" in plan_guard.PERSON_ONLY_TYPES

    def change(address: str, kind: str) -> dict[str, Any]:
        name = address.split("[")[0].split(".")[1]
        return {
            "address": address,
            "type": kind,
            "name": name,
            "mode": "managed",
            "change": {"actions": ["create"]},
        }

    plan = {
        "resource_changes": [
            change('google_service_account.fn["new"]', "google_service_account"),
            change(
                'google_service_account_iam_member.build_act_as["fn-new"]',
                "google_service_account_iam_member",
            ),
            change('google_cloudfunctions2_function.fn["new"]', "google_cloudfunctions2_function"),
        ]
    }
    assert plan_guard.person_only(plan) == [
        'google_service_account.fn["new"] (create)',
        'google_service_account_iam_member.build_act_as["fn-new"] (create)',
    ]


def test_ci_stops_before_applying_what_only_a_person_may(tf: Config) -> None:
    from tools import plan_guard

    script = _build_steps()["plan-guard"]["args"][-1]
    assert "terraform -chdir=terraform show -json tfplan > build/tfplan.json" in script
    assert ".venv/bin/python -m tools.plan_guard build/tfplan.json" in script
    # What it stops on is what the deployer cannot do: its own grants and the custom roles.
    deployers = {
        f"google_project_iam_member.{name}"
        for name, body in tf.of_type("google_project_iam_member").items()
        if "google_service_account.build.email" in body["member"]
    }
    assert deployers == plan_guard.PERSON_ONLY_ADDRESSES
    custom_roles = {kind for kind, _ in tf.resources if "custom_role" in kind}
    assert custom_roles == {"google_project_iam_custom_role"}
    assert custom_roles <= plan_guard.PERSON_ONLY_TYPES

    def change(address: str, *actions: str) -> dict[str, Any]:
        kind, name = address.split("[")[0].split(".")
        return {
            "address": address,
            "type": kind,
            "name": name,
            "mode": "managed",
            "change": {"actions": list(actions)},
        }

    plan = {
        "resource_changes": [
            change('google_project_iam_custom_role.fn["session"]', "update"),
            change("google_project_iam_member.build_iam_admin", "no-op"),
            change('google_project_iam_member.fn["session/code"]', "create"),
            change('google_cloudfunctions2_function.fn["session"]', "update"),
        ]
    }
    assert plan_guard.person_only(plan) == ['google_project_iam_custom_role.fn["session"] (update)']
    plan["resource_changes"][0]["change"]["actions"] = ["no-op"]
    assert plan_guard.person_only(plan) == []
    plan["resource_changes"][1]["change"]["actions"] = ["delete", "create"]
    assert plan_guard.person_only(plan) == [
        "google_project_iam_member.build_iam_admin (delete, create)"
    ]


def test_ci_stops_before_changing_the_trigger_that_runs_it(tf: Config) -> None:
    """The trigger runs builds as the deployer: changing it takes a Cloud Build role and actAs
    on the deployer itself, neither of which the deployer holds, so a person applies it."""
    from tools import plan_guard

    trigger = tf.resource("google_cloudbuild_trigger", "main")
    assert trigger["service_account"] == "${google_service_account.build.id}"
    build_roles = _x(tf.locals["build_roles"])
    assert "roles/cloudbuild." not in build_roles, "the deployer may now edit Cloud Build"
    assert "google_cloudbuild_trigger" in plan_guard.PERSON_ONLY_TYPES
    plan = {
        "resource_changes": [
            {
                "address": "google_cloudbuild_trigger.main[0]",
                "type": "google_cloudbuild_trigger",
                "name": "main",
                "mode": "managed",
                "change": {"actions": ["update"]},
            }
        ]
    }
    assert plan_guard.person_only(plan) == ["google_cloudbuild_trigger.main[0] (update)"]


def test_no_role_is_broader_than_needed(tf: Config) -> None:
    everything = list(_strings(tf.files))
    roles = {r for s in everything for r in re.findall(r"roles/[A-Za-z0-9_.]+", s)}
    assert roles, "no roles found: the parse is wrong"
    assert not roles & FORBIDDEN_ROLES, roles & FORBIDDEN_ROLES
    project_level = [
        body
        for kind in ("google_project_iam_member", "google_project_iam_binding")
        for body in tf.of_type(kind).values()
    ]
    assert not tf.of_type("google_project_iam_policy"), "an authoritative project policy"
    project_roles = {
        r for body in project_level for s in _strings(body) for r in re.findall(r"roles/\S+", s)
    }
    # Roles given through a local (the deployer's list) are project-level too.
    project_roles |= {
        r for s in _strings(tf.locals["build_roles"]) for r in re.findall(r"roles/[\w.]+", s)
    }
    assert not project_roles & FORBIDDEN_PROJECT_ROLES, (
        f"project-wide actAs or token minting: {project_roles & FORBIDDEN_PROJECT_ROLES}; "
        "grant it on the one service account (google_service_account_iam_member)"
    )
    public = [
        (kind, name)
        for (kind, name), body in tf.resources.items()
        if any(m in ("allUsers", "allAuthenticatedUsers") for m in _strings(body.get("member", "")))
    ]
    assert public == [("google_cloud_run_service_iam_member", "public")], public


def test_public_and_private_bindings(tf: Config) -> None:
    public = tf.resource("google_cloud_run_service_iam_member", "public")
    assert _x(public["for_each"]) == _x(
        '${{for name, f in local.fn : name => f if f.trigger == "http" && f.public}}'
    )
    assert (public["role"], public["member"]) == ("roles/run.invoker", "allUsers")
    # On the Cloud Run service (the function resource refuses allUsers), with its reason.
    assert public["service"] == "${google_cloudfunctions2_function.fn[each.key].name}"
    assert any(c.startswith("checkov:skip=CKV_GCP_102:") for c in _comments(public))
    fn = tf.resource("google_cloudfunctions2_function", "fn")["service_config"][0]
    assert fn["ingress_settings"] == '${each.value.public ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"}'
    table = _table(tf)
    private = [n for n, e in table.items() if not e["public"]]
    assert "audit-trigger" in private
    # Private functions are invoked only by the accounts made for that.
    invokers = {
        name: body["member"]
        for (kind, name), body in tf.resources.items()
        if kind == "google_cloud_run_service_iam_member" and name != "public"
    }
    assert invokers == {
        "trigger_invoker": "serviceAccount:${google_service_account.trigger[each.key].email}",
        "scheduler_invoker": "serviceAccount:${google_service_account.scheduler.email}",
        "tasks_invoker": "serviceAccount:${google_service_account.tasks.email}",
    }


def test_every_checkov_skip_says_why() -> None:
    skip = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")
    found: list[tuple[str, str]] = []
    for path in [*TERRAFORM.glob("*.tf"), ROOT / "ci" / "Dockerfile"]:
        for line in path.read_text().splitlines():
            match = skip.search(line)
            if match:
                reason = (match.group(2) or "").strip()
                assert len(reason.split()) >= 5, (
                    f"{path.name}: skip {match.group(1)} needs a reason"
                )
                found.append((path.name, match.group(1)))
    assert found, "no skips found: the pattern is wrong"


# --- generated from the code, and current ----------------------------------------------------


def test_generated_inputs_are_current() -> None:
    assert terraform_inputs.OUTPUT.read_text() == terraform_inputs.render(), (
        "terraform/generated/code.json is stale: run `python -m tools.terraform_inputs`"
    )


def test_every_index_and_ttl_policy_is_provisioned(tf: Config) -> None:
    assert _x(tf.locals["code"]) == _x('${jsondecode(file("${path.module}/generated/code.json"))}')
    spec = json.loads(terraform_inputs.INDEXES.read_text())
    code = json.loads(terraform_inputs.OUTPUT.read_text())
    provisioned = {
        (
            i["collection"],
            i["query_scope"],
            tuple((f["field_path"], f["order"], f["array_config"]) for f in i["fields"]),
        )
        for i in code["firestore_indexes"].values()
    }
    for index in spec["indexes"]:
        key = (
            index["collectionGroup"],
            index.get("queryScope", "COLLECTION"),
            tuple((f["fieldPath"], f.get("order"), f.get("arrayConfig")) for f in index["fields"]),
        )
        assert key in provisioned, f"firestore.indexes.json index not provisioned: {index}"
    assert len(provisioned) == len(spec["indexes"])

    index = tf.resource("google_firestore_index", "index")
    assert index["for_each"] == "${local.code.firestore_indexes}"
    assert (index["collection"], index["query_scope"]) == (
        "${each.value.collection}",
        "${each.value.query_scope}",
    )
    fields = index["dynamic"][0]["fields"]
    assert fields["for_each"] == "${each.value.fields}"
    assert fields["content"][0] == {
        "field_path": "${fields.value.field_path}",
        "order": "${fields.value.order}",
        "array_config": "${fields.value.array_config}",
    }

    ttl = {(o["collectionGroup"], o["fieldPath"]) for o in spec["fieldOverrides"] if o.get("ttl")}
    assert {("sessions", "expiresAt"), ("idempotency", "expiresAt")} <= ttl
    generated = {
        (f["collection"], f["field"]) for f in code["firestore_fields"].values() if f["ttl"]
    }
    assert generated == ttl
    field = tf.resource("google_firestore_field", "field")
    assert field["for_each"] == "${local.code.firestore_fields}"
    assert field["dynamic"][0]["ttl_config"]["for_each"] == "${each.value.ttl ? [true] : []}"

    database = tf.resource("google_firestore_database", "main")
    assert database["type"] == "FIRESTORE_NATIVE"
    assert database["point_in_time_recovery_enablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    assert database["delete_protection_state"] == "DELETE_PROTECTION_ENABLED"
    assert database["lifecycle"][0]["prevent_destroy"] is True
    rules = tf.resource("google_firebaserules_ruleset", "firestore")
    assert (
        rules["source"][0]["files"][0]["content"] == '${file("${path.module}/../firestore.rules")}'
    )
    release = tf.resource("google_firebaserules_release", "firestore")
    assert release["name"] == "cloud.firestore"


def test_firestore_is_backed_up_beyond_point_in_time_recovery(tf: Config) -> None:
    """PITR reaches back 7 days; medical records are kept for decades. A daily backup kept a
    week and a weekly one kept 14 weeks (each recurrence's longest) cover what PITR cannot."""
    schedules = tf.of_type("google_firestore_backup_schedule")
    assert set(schedules) == {"daily", "weekly"}
    for name, schedule in schedules.items():
        assert schedule["database"] == "${google_firestore_database.main.name}", name
        assert schedule["project"] == "${var.project_id}", name
    seconds = {name: int(b["retention"].removesuffix("s")) for name, b in schedules.items()}
    day, week = 86400, 7 * 86400
    assert "daily_recurrence" in schedules["daily"]
    assert seconds["daily"] == 7 * day  # the longest a daily backup may be kept
    assert schedules["weekly"]["weekly_recurrence"][0]["day"] in ("SATURDAY", "SUNDAY")
    assert 12 * week <= seconds["weekly"] <= 14 * week
    database = tf.resource("google_firestore_database", "main")
    assert database["point_in_time_recovery_enablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"


def test_every_audited_collection_has_its_trigger(tf: Config) -> None:
    code = json.loads(terraform_inputs.OUTPUT.read_text())
    assert code["audited_collections"] == sorted(AUDITED_COLLECTIONS)
    assert code["outbox_collection"] == NOTIFICATIONS
    table = _table(tf)
    assert table["audit-trigger"]["on"] == "audited"
    # The trigger's event type is the one the code accepts (shared/audit/events.py).
    event = table["audit-trigger"]["event"]
    assert audit_events.EVENT_TYPE.removeprefix("google.cloud.firestore.document.v1.") == event
    assert _x(tf.locals["event_collections"]["audited"]) == "${local.code.audited_collections}"
    assert tf.locals["event_collections"]["outbox"] == ["${local.code.outbox_collection}"]

    triggers = _x(tf.locals["event_triggers"])
    assert 'forcollectioninlocal.event_collections[f.on]:"${name}-${lower(collection)}"' in triggers
    assert 'event_type="google.cloud.firestore.document.v1.${f.event}"' in triggers
    names = [
        f"{name}-{collection.lower()}"
        for name, entry in table.items()
        if entry["trigger"] == "event"
        for collection in {"audited": code["audited_collections"], "outbox": [NOTIFICATIONS]}[
            entry["on"]
        ]
    ]
    assert {f"audit-trigger-{c.lower()}" for c in AUDITED_COLLECTIONS} <= set(names)
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z][a-z0-9-]{0,62}", n) for n in names), names

    trigger = tf.resource("google_eventarc_trigger", "firestore")
    assert trigger["for_each"] == "${local.event_triggers}"
    assert trigger["event_data_content_type"] == "application/protobuf"
    assert trigger["location"] == "${var.firestore_location}"
    criteria = {c["attribute"]: c for c in trigger["matching_criteria"]}
    assert criteria["type"]["value"] == "${each.value.event_type}"
    assert criteria["document"] == {
        "attribute": "document",
        "operator": "match-path-pattern",
        "value": "${each.value.collection}/{document}",
    }
    assert trigger["destination"][0]["cloud_run_service"][0]["service"] == (
        "${google_cloudfunctions2_function.fn[each.value.function].name}"
    )
    assert (
        trigger["service_account"] == "${google_service_account.trigger[each.value.function].email}"
    )
    receiver = tf.resource("google_project_iam_member", "trigger_receiver")
    assert receiver["role"] == "roles/eventarc.eventReceiver"


# --- schedules, queues, secrets -------------------------------------------------------------


def test_every_scheduled_route_has_its_job(tf: Config) -> None:
    scheduled = {
        (fn, method, path)
        for (fn, method, path), rule in _rules().items()
        if "scheduler" in _services(rule)
    }
    assert scheduled, "the policy opens no route to Cloud Scheduler"
    config = schedules.load()
    jobs = {(j.function, "POST", j.path) for j in config.jobs}
    missing = sorted(scheduled - jobs)
    assert not missing, f"scheduled routes without a job in terraform/schedules.json: {missing}"
    extra = sorted(jobs - scheduled)
    assert not extra, f"jobs for routes the policy does not open to Cloud Scheduler: {extra}"
    for job in config.jobs:
        assert job.function in tf.locals["functions"], job

    # Terraform makes its jobs from that file, every setting of a job included.
    assert tf.locals["schedule_config"] == '${jsondecode(file("${path.module}/schedules.json"))}'
    assert tf.locals["schedules"] == "${local.schedule_config.jobs}"
    resource = tf.resource("google_cloud_scheduler_job", "job")
    assert resource["for_each"] == "${local.schedules}"
    assert resource["time_zone"] == "${local.schedule_config.time_zone}"
    assert resource["attempt_deadline"] == "${local.schedule_config.attempt_deadline}"
    assert resource["retry_config"][0] == {
        key: f"${{local.schedule_config.retry_config.{key}}}"
        for key in ("retry_count", "min_backoff_duration", "max_backoff_duration")
    }
    target = resource["http_target"][0]
    assert target["http_method"] == "POST"
    assert target["uri"] == "${local.functions_base_url}/${each.value.function}${each.value.path}"
    # The audience the code checks: FUNCTIONS_BASE_URL + "/" + the function.
    assert target["oidc_token"][0] == {
        "service_account_email": "${google_service_account.scheduler.email}",
        "audience": "${local.functions_base_url}/${each.value.function}",
    }
    assert (
        tf.locals["functions_base_url"]
        == "https://${var.region}-${var.project_id}.cloudfunctions.net"
    )
    env = tf.locals["common_env"]
    assert env["FUNCTIONS_BASE_URL"] == "${local.functions_base_url}"
    assert env["SCHEDULER_SERVICE_ACCOUNT"] == "${google_service_account.scheduler.email}"
    assert env["TASKS_SERVICE_ACCOUNT"] == "${google_service_account.tasks.email}"
    # PayPal sends the buyer back to the front end: with several origins the code cannot guess.
    assert env["FRONTEND_URL"] == "${var.frontend_origins[0]}"


def test_queues_are_protected_and_bounded(tf: Config) -> None:
    queue = tf.resource("google_cloud_tasks_queue", "queue")
    assert queue["lifecycle"][0]["prevent_destroy"] is True
    assert queue["rate_limits"]
    assert queue["retry_config"]
    assert "payouts" in tf.locals["queues"]


def test_http_functions_serve_concurrent_requests_on_a_whole_cpu(tf: Config) -> None:
    """One request at a time on about a third of a vCPU (Cloud Run's default at 512Mi) makes
    each instance a queue of one: HTTP functions serve 8 at once on 1 vCPU, as the 8 threads
    of functions-framework serve them locally; event functions take one event at a time."""
    defaults = _defaults(tf)
    assert defaults["concurrency"] == _ByTrigger("http", 8, 1)
    assert defaults["cpu"] == _ByTrigger("http", "1", None)
    for name, entry in _table(tf).items():
        if entry["trigger"] == "http":
            assert entry["concurrency"] > 1, f"{name} serves one request at a time"
        # Cloud Run refuses more than one request at a time on less than one vCPU.
        if entry["concurrency"] > 1:
            assert entry["cpu"] is not None, name
            assert float(entry["cpu"]) >= 1, name
    service = tf.resource("google_cloudfunctions2_function", "fn")["service_config"][0]
    assert service["max_instance_request_concurrency"] == "${each.value.concurrency}"
    assert service["available_cpu"] == "${each.value.cpu}"

    # A request refused for want of an instance (429) alerts: the code never answers 429.
    web = [*ROOT.glob("shared/web/*.py"), *ROOT.glob("functions/*/main.py")]
    for path in web:
        text = path.read_text()
        assert "429" not in text, path
        assert "TOO_MANY_REQUESTS" not in text, path
    overflow = tf.resource("google_monitoring_alert_policy", "overflow")
    assert overflow["for_each"] == "${local.fn}"
    condition = overflow["conditions"][0]["condition_threshold"][0]
    assert condition["filter"] == (
        'resource.type="cloud_run_revision" AND resource.labels.service_name="${each.key}" '
        'AND metric.type="run.googleapis.com/request_count" '
        'AND metric.labels.response_code="429"'
    )
    assert condition["threshold_value"] == 0


def test_tasks_workers_outlast_the_dispatch_deadline(tf: Config) -> None:
    """Cloud Tasks waits for a delivery up to the task's dispatch deadline: a worker that timed
    out sooner would be retried while its first run may still be writing."""
    import dataclasses

    from shared.integrations import cloud_tasks

    (deadline,) = [
        f.default
        for f in dataclasses.fields(cloud_tasks.HttpTask)
        if f.name == "dispatch_deadline_seconds"
    ]
    assert isinstance(deadline, int)
    source = "\n".join(
        path.read_text() for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/*/*.py")]
    )
    assert "dispatch_deadline_seconds=" not in source, "a task sets its own deadline: check it"
    workers = {name: e for name, e in _table(tf).items() if e["tasks_worker"]}
    assert {"payouts", "privacy"} <= set(workers)
    for name, entry in workers.items():
        assert entry["timeout"] >= deadline, (
            f"{name}: timeout {entry['timeout']} s, but Cloud Tasks waits up to {deadline} s"
        )
    service = tf.resource("google_cloudfunctions2_function", "fn")["service_config"][0]
    assert service["timeout_seconds"] == "${each.value.timeout}"


def test_secrets_carry_no_values(tf: Config) -> None:
    kinds = {kind for kind, _ in tf.resources}
    assert "google_secret_manager_secret_version" not in kinds
    assert not [s for s in _strings(tf.files) if "secret_data" in s]
    read = {e for name in bundle.function_names() for e in code_facts.needs(name).env}
    for secret, env in tf.locals["secrets"].items():
        assert re.fullmatch(r"[a-z][a-z0-9-]+", secret), secret
        assert env not in tf.locals["common_env"], f"{env} must come from Secret Manager"
    paypal = {"PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET", "PAYPAL_WEBHOOK_ID"}
    assert paypal <= read, "the PayPal credentials' variable names changed in the code"


def test_audit_exports_are_kept_six_years_and_only_the_audit_function_writes_them(
    tf: Config,
) -> None:
    bucket = tf.resource("google_storage_bucket", "audit_export")
    retention = bucket["retention_policy"][0]
    assert retention["retention_period"] == "${var.audit_retention_days * 86400}"
    assert retention["is_locked"] == "${var.audit_retention_locked}"
    days = tf.variables["audit_retention_days"]
    assert days["default"] * 86400 >= 6 * 365.25 * 86400, "shorter than six years"
    assert "var.audit_retention_days >= 2192" in days["validation"][0]["condition"]
    assert tf.variables["audit_retention_locked"]["default"] is True
    # Unlocked only in a throwaway project.
    (check,) = bucket["lifecycle"][0]["precondition"]
    assert check["condition"] == "${var.audit_retention_locked || var.throwaway_project}"
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["force_destroy"] is False

    # Create and read back, never delete or replace (no objectAdmin, no objectUser).
    grant = tf.resource("google_storage_bucket_iam_member", "audit_export")
    assert _x(grant["for_each"]) == _x(
        '${toset(["roles/storage.objectCreator", "roles/storage.objectViewer"])}'
    )
    assert grant["bucket"] == "${google_storage_bucket.audit_export.name}"
    assert grant["member"] == 'serviceAccount:${google_service_account.fn["audit"].email}'

    # The audit function exports there, and only it reads the export's location.
    table = _table(tf)
    assert table["audit"]["env"]["AUDIT_EXPORT_URL"] == (
        "gs://${google_storage_bucket.audit_export.name}/audit"
    )
    readers = [n for n in bundle.function_names() if "AUDIT_EXPORT_URL" in code_facts.needs(n).env]
    assert readers == ["audit"]


def test_audit_keys_reach_every_function_that_writes_or_signs_entries(tf: Config) -> None:
    table = _table(tf)
    hashing = {n for n in bundle.function_names() if "AUDIT_HASH_KEY" in code_facts.needs(n).env}
    assert {"audit", "audit-trigger"} <= hashing
    assert {n for n, e in table.items() if "audit-hash-key" in e["secrets"]} == hashing
    assert {n for n, e in table.items() if "audit-signing-key" in e["secrets"]} == {"audit"}


def test_environment_names_are_read_by_the_code(tf: Config) -> None:
    settings_source = code_facts.SETTINGS.read_text()
    known = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', settings_source))
    known |= {e for name in bundle.function_names() for e in code_facts.needs(name).env}
    typos = sorted(set(tf.locals["common_env"]) - known)
    assert not typos, f"terraform sets environment no code reads (a typo?): {typos}"
    for name, entry in _table(tf).items():
        unread = sorted(set(entry["env"]) - set(code_facts.needs(name).env))
        assert not unread, f"{name}: terraform sets {unread}, which its code does not read"


# --- monitoring -----------------------------------------------------------------------------


def test_alerts_match_log_lines_the_code_writes(tf: Config) -> None:
    lines = code_facts.log_lines()
    assert lines, "no log lines found: the scan is wrong"
    for name, alert in tf.locals["log_alerts"].items():
        message = alert["message"]
        # The filter turns %s into .* and takes the rest as a regex: keep the rest plain.
        assert re.fullmatch(r"[A-Za-z0-9 _:,'-]+", message.replace("%s", "")), (
            f"{name}: {message!r} may hold only letters, digits, spaces, _ : , ' - and %s"
        )
        matching = [
            line
            for line in lines
            if line.logger == alert["logger"]
            and line.severity == alert["severity"]
            and line.message.startswith(message)
        ]
        if alert.get("pending"):
            assert not matching, (
                f"log alert {name} is marked pending, but the code now logs it "
                f"({matching[0].path}:{matching[0].line}): drop its `pending` in "
                "terraform/monitoring.tf"
            )
        else:
            assert matching, (
                f"log alert {name} matches {alert['severity']} lines of {alert['logger']} starting "
                f"{message!r}, which the code does not write"
            )
    metric = tf.resource("google_logging_metric", "log_alert")
    assert _x(metric["filter"]) == _x(
        '${join(" AND ", ["resource.type=\\"cloud_run_revision\\"", '
        '"severity>=${each.value.severity}", '
        '"jsonPayload.logger=\\"${each.value.logger}\\"", '
        '"jsonPayload.message=~\\"^${replace(each.value.message, "%s", ".*")}\\""])}'
    )
    # The logger names the alerts match are the ones shared.platform.logs writes as `logger`.
    assert '"logger": record.name' in (ROOT / "shared" / "platform" / "logs.py").read_text()
    errors = tf.resource("google_monitoring_alert_policy", "http_5xx")
    assert errors["for_each"] == "${local.fn}"


def test_alerts_reach_someone_outside_a_throwaway_project(tf: Config) -> None:
    channel = tf.resource("google_monitoring_notification_channel", "email")
    assert channel["count"] == '${var.alert_email == "" ? 0 : 1}'
    assert tf.locals["notification_channels"] == (
        "${google_monitoring_notification_channel.email[*].id}"
    )
    assert _x(tf.locals["alerts_reach_someone"]) == _x(
        "${length(local.notification_channels) > 0 || var.throwaway_project}"
    )
    assert tf.variables["throwaway_project"]["default"] is False
    policies = tf.of_type("google_monitoring_alert_policy")
    assert set(policies) == {"log_alert", "http_5xx", "overflow", "delivery_alert", "event_backlog"}
    for name, policy_body in policies.items():
        assert policy_body["notification_channels"] == "${local.notification_channels}", name
        (check,) = policy_body["lifecycle"][0]["precondition"]
        assert check["condition"] == "${local.alerts_reach_someone}", name
        assert check["error_message"] == "${local.no_channel_error}", name
    assert "throwaway_project" in tf.locals["no_channel_error"]


def test_failures_no_function_logs_alert_too(tf: Config) -> None:
    """A scheduled job whose function never answered, a task dropped after its last retry, a
    queue failing its deliveries, an Eventarc event nobody acknowledged: none reaches the
    functions' logs, so each is read where its service logs or measures it."""
    alerts = tf.locals["delivery_alerts"]
    by_resource = {name: a["resource"] for name, a in alerts.items()}
    assert by_resource == {
        "scheduler_job_failed": "cloud_scheduler_job",
        "task_failed_for_good": "cloud_tasks_queue",
        "task_attempts_failing": "cloud_tasks_queue",
    }
    assert alerts["scheduler_job_failed"]["filter"] == "severity>=ERROR"
    assert alerts["scheduler_job_failed"]["target"] == "job_id"
    dropped = alerts["task_failed_for_good"]["filter"]
    assert 'jsonPayload.attemptResponseLog.status!="OK"' in dropped
    assert "NOT jsonPayload.attemptResponseLog.retryTime:*" in dropped  # the last attempt
    for name, alert in alerts.items():
        assert len(alert["doc"].split()) >= 20, f"{name}: say what to do"
        assert re.fullmatch(r"[a-z_]+", name), name
    # Cloud Tasks logs every attempt, which the two task alerts count.
    queue = tf.resource("google_cloud_tasks_queue", "queue")
    assert queue["stackdriver_logging_config"][0]["sampling_ratio"] == 1.0
    # Scheduler logs each job's attempts; jobs exist for the alert to watch.
    assert tf.resource("google_cloud_scheduler_job", "job")

    metric = tf.resource("google_logging_metric", "delivery_alert")
    assert metric["for_each"] == "${local.delivery_alerts}"
    assert metric["filter"] == 'resource.type="${each.value.resource}" AND ${each.value.filter}'
    assert metric["label_extractors"] == {"target": "EXTRACT(resource.labels.${each.value.target})"}
    policy = tf.resource("google_monitoring_alert_policy", "delivery_alert")
    condition = policy["conditions"][0]["condition_threshold"][0]
    assert "${google_logging_metric.delivery_alert[each.key].name}" in condition["filter"]
    assert condition["threshold_value"] == "${each.value.threshold}"
    assert policy["documentation"][0]["content"] == "${each.value.doc}"

    # The Firestore events' Pub/Sub subscriptions: an event unacknowledged for 15 minutes.
    backlog = tf.resource("google_monitoring_alert_policy", "event_backlog")
    condition = backlog["conditions"][0]["condition_threshold"][0]
    assert "pubsub.googleapis.com/subscription/oldest_unacked_message_age" in condition["filter"]
    assert 'resource.type="pubsub_subscription"' in condition["filter"]
    assert condition["threshold_value"] == 900
    assert condition["aggregations"][0]["group_by_fields"] == ["resource.labels.subscription_id"]
    assert tf.resource("google_eventarc_trigger", "firestore")
    assert "pubsub.googleapis.com" in _x(tf.locals["apis"])


def test_readme_says_pending_only_of_pending_alerts(tf: Config) -> None:
    pending = sorted(n for n, a in tf.locals["log_alerts"].items() if a.get("pending"))
    row = next(
        line for line in _readme_deploy().splitlines() if line.startswith("| `terraform/monitoring")
    )
    if not pending:
        assert "pending" not in row, "the README marks alerts pending; monitoring.tf marks none"


# --- Hosting rewrites ----------------------------------------------------------------------


def test_hosting_rewrites_cover_every_public_http_function(tf: Config) -> None:
    hosting = json.loads((ROOT / "firebase.json").read_text())["hosting"]
    region = tf.variables["region"]["default"]
    rewrites = hosting["rewrites"]
    public = sorted(n for n, e in _table(tf).items() if e["trigger"] == "http" and e["public"])
    expected = [
        {"source": source, "run": {"serviceId": name, "region": region}}
        for name in public
        for source in (f"/api/{name}", f"/api/{name}/**")
    ]
    missing = [r["source"] for r in expected if r not in rewrites]
    assert not missing, f"firebase.json has no rewrite for {missing} (to {region})"
    extra = [r for r in rewrites if r not in expected]
    assert not extra, f"firebase.json rewrites to what is not a public HTTP function: {extra}"
    assert (ROOT / hosting["public"]).is_dir()


def test_hosting_headers_apply_by_source_glob_and_name_the_auth_emulator_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dev.gateway import hosting_headers

    config = {
        "hosting": {
            "headers": [
                {"source": "**", "headers": [{"key": "X-A", "value": "all"}]},
                {"source": "/*.js", "headers": [{"key": "X-A", "value": "scripts"}]},
                {
                    "source": "/admin/**",
                    "headers": [{"key": "Content-Security-Policy", "value": "connect-src 'self'"}],
                },
            ]
        }
    }
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    assert hosting_headers(config, "/") == {"X-A": "all"}
    assert hosting_headers(config, "/app.js") == {"X-A": "scripts"}  # the later block wins
    assert hosting_headers(config, "/lib/app.js") == {"X-A": "all"}  # `*` stays in a segment
    assert hosting_headers(config, "/admin/a/b")["Content-Security-Policy"] == "connect-src 'self'"
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    assert hosting_headers(config, "/admin/x")["Content-Security-Policy"] == (
        "connect-src 'self' http://127.0.0.1:9099"
    )
    production = json.loads((ROOT / "firebase.json").read_text())
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST")
    served = hosting_headers(production, "/index.html")
    assert "script-src 'self'" in served["Content-Security-Policy"]
    assert "127.0.0.1" not in served["Content-Security-Policy"]  # production names no emulator


# --- pins, backend, CI ------------------------------------------------------------------------


def test_provider_is_pinned_to_7x_with_a_gcs_backend(tf: Config) -> None:
    (block,) = tf.files["versions.tf"]["terraform"]
    google = block["required_providers"][0]["google"]
    assert google == {"source": "hashicorp/google", "version": ">= 7.0.0, < 8.0.0"}
    assert "gcs" in block["backend"][0]
    kinds = {kind for kind, _ in tf.resources}
    assert not [k for k in kinds if k.startswith("google_") and "beta" in k]
    assert "google-beta" not in json.dumps(tf.files)
    outputs = {name for doc in tf.files.values() for b in doc.get("output", []) for name in b}
    assert "function_urls" in outputs


def test_cloudbuild_tests_then_deploys_main_only() -> None:
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    steps = {s["id"]: s for s in build["steps"]}
    assert list(steps) == [
        "ci-image",
        "test",
        "bundles",
        "settings",
        "terraform-init",
        "terraform-plan",
        "plan-guard",
        "terraform-apply",
        "hosting",
    ]
    image = steps["ci-image"]["args"]
    assert image[image.index("--file") + 1] == "ci/Dockerfile"
    tag = image[image.index("--tag") + 1]
    assert all(s["name"] == tag for i, s in steps.items() if i != "ci-image")
    assert (steps["test"]["entrypoint"], steps["test"]["args"]) == ("make", ["test"])
    assert steps["bundles"]["args"] == ["-m", "tools.deploy_bundles", "build/bundles"]
    assert steps["terraform-init"]["args"][0] == "init"
    assert steps["terraform-plan"]["args"][:2] == ["plan", "-input=false"]
    assert steps["settings"]["entrypoint"] == "bash"
    assert "TF_VAR_bundles_dir=../build/bundles" in steps["terraform-plan"]["env"]
    for deploying in ("terraform-apply", "hosting"):
        script = steps[deploying]["args"][-1]
        assert '"$BRANCH_NAME" != "main"' in script, deploying
    assert "terraform apply -input=false tfplan" in steps["terraform-apply"]["args"][-1]
    # A build run as a chosen service account must set where its logs go.
    assert build["options"]["logging"] in ("CLOUD_LOGGING_ONLY", "GCS_ONLY", "NONE")
    trigger = _config().resource("google_cloudbuild_trigger", "main")
    assert trigger["service_account"] == "${google_service_account.build.id}"
    assert trigger["github"][0]["push"][0]["branch"] == "^main$"

    dockerfile = (ROOT / "ci" / "Dockerfile").read_text()
    for needed in (
        "python:3.11",
        "openjdk-17",
        "google-cloud-cli-firestore-emulator",
        "node",
        "terraform",
    ):
        assert needed in dockerfile, f"ci/Dockerfile lacks {needed}, which make test needs"


def test_the_deployer_pushes_no_image() -> None:
    """The CI image is built on the build's own machine and used there (cloudbuild.yaml never
    pushes it), and the functions' images are pushed by the builder account: the deployer
    needs no Artifact Registry role."""
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    assert "images" not in build
    assert "artifacts" not in build
    for step in build["steps"]:
        assert "push" not in step.get("args", []), step["id"]
        assert "docker push" not in " ".join(map(str, step.get("args", []))), step["id"]
    assert "roles/artifactregistry." not in _x(_config().locals["build_roles"])
    builder = _config().resource("google_project_iam_member", "builder")
    assert "roles/artifactregistry.writer" in builder["for_each"]


def test_terraform_uploads_the_bundles_tools_build(tf: Config, tmp_path: Path) -> None:
    from tools import deploy_bundles

    assert _x(tf.locals["bundles"]) == _x(
        '${jsondecode(file("${local.bundles_dir}/manifest.json"))}'
    )
    obj = tf.resource("google_storage_bucket_object", "bundle")
    assert obj["for_each"] == "${local.fn}"
    assert obj["name"] == "functions/${each.key}/${local.bundles[each.key].sha256}.zip"
    assert obj["source"] == "${local.bundles_dir}/${local.bundles[each.key].file}"
    fn = tf.resource("google_cloudfunctions2_function", "fn")
    storage = fn["build_config"][0]["source"][0]["storage_source"][0]
    assert storage["object"] == "${google_storage_bucket_object.bundle[each.key].name}"
    assert tf.variables["bundles_dir"]["default"] == "../build/bundles"
    assert tf.resource("google_storage_bucket", "source")["public_access_prevention"] == "enforced"

    # What the plan would read for each function: a zip in the manifest, named by its hash.
    manifest = deploy_bundles.build_all(tmp_path / "bundles")
    for name in tf.locals["functions"]:
        entry = manifest[name]
        data = (tmp_path / "bundles" / entry["file"]).read_bytes()
        assert entry["sha256"] in f"functions/{name}/{entry['sha256']}.zip"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


# --- one environment's settings, read by the first deploy and by CI ----------------------------


def _readme_deploy() -> str:
    """The deploy guide, which an operator follows from zero (the README links to it)."""
    return (ROOT / "docs" / "guides" / "deploy.md").read_text()


def _tfvars(path: Path) -> dict[str, Any]:
    """A .tfvars file as python-hcl2 reads it (in .venv-iac, like the configuration)."""
    code = "import hcl2, json, sys; json.dump(hcl2.load(open(sys.argv[1])), sys.stdout)"
    result = subprocess.run(
        [str(IAC_PYTHON), "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"python-hcl2 could not parse {path}:\n{result.stderr}"
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _build_steps() -> dict[str, dict[str, Any]]:
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return {s["id"]: s for s in build["steps"]}


def _ci_explicit_variables() -> set[str]:
    """Variables cloudbuild.yaml's plan sets itself (TF_VAR_ or -var), not from the file."""
    plan = _build_steps()["terraform-plan"]
    names = {e.split("=", 1)[0].removeprefix("TF_VAR_") for e in plan.get("env", [])}
    args = plan["args"]
    names |= {a.split("=", 1)[0] for i, a in enumerate(args) if i and args[i - 1] == "-var"}
    names |= {a.removeprefix("-var=").split("=", 1)[0] for a in args if a.startswith("-var=")}
    return names


def test_every_variable_reaches_a_ci_deploy(tf: Config) -> None:
    """A CI deploy sets every variable: the build's own, the rest from the environment's file,
    which must set each (the check step refuses one that does not): none falls back to a
    default the operator did not choose, as smtp_host or github_owner once did."""
    steps = _build_steps()
    plan = steps["terraform-plan"]
    assert terraform_settings.VAR_FILE_ARG in plan["args"], "CI plans without the settings file"
    explicit = _ci_explicit_variables()
    assert explicit == set(terraform_settings.CI_VARIABLES), (
        f"cloudbuild.yaml sets {sorted(explicit)} itself: environment settings belong in the "
        "environment's file (terraform/environments/example.tfvars)"
    )
    for name, value in terraform_settings.CI_VARIABLES.items():
        assert f"TF_VAR_{name}={value}" in plan["env"]
        assert tf.variables[name]["default"] == value
    example = {
        k: v for k, v in _tfvars(terraform_settings.EXAMPLE).items() if not k.startswith("__")
    }
    for name, variable in tf.variables.items():
        if name in explicit:
            continue
        assert name in example, (
            f"variable {name!r} ({'no default' if 'default' not in variable else 'a default'}) "
            "is set neither by cloudbuild.yaml nor in terraform/environments/example.tfvars: "
            "a CI deploy would not pass it. Add it to the example (and each environment's file)"
        )
    assert set(example) <= set(tf.variables), set(example) - set(tf.variables)
    # The example is a valid environment file, and the check refuses one missing a variable.
    text = terraform_settings.EXAMPLE.read_text()
    assert terraform_settings.problems(text) == []
    assert terraform_settings.declared() == set(tf.variables)
    dropped = "\n".join(line for line in text.splitlines() if not line.startswith("smtp_host"))
    (problem,) = terraform_settings.problems(dropped)
    assert "smtp_host" in problem
    assert terraform_settings.problems(text + '\nsmtp_hots = "x"\n')
    assert terraform_settings.problems(text + '\nbundles_dir = "x"\n')
    assert terraform_settings.problems(text, project="another-project")

    # Downloaded and checked before terraform runs, from the bucket the trigger names.
    order = list(steps)
    assert order.index("settings") < order.index("terraform-plan")
    script = steps["settings"]["args"][-1]
    assert (
        'gcloud storage cp "gs://${_TF_STATE_BUCKET}/environment.tfvars" '
        f"{terraform_settings.LOCAL_COPY}" in script
    )
    assert (
        f"python -m tools.terraform_settings check {terraform_settings.LOCAL_COPY} "
        '--project "$PROJECT_ID"' in script
    )
    assert "set -euo pipefail" in script
    trigger = tf.resource("google_cloudbuild_trigger", "main")
    assert trigger["substitutions"] == {"_TF_STATE_BUCKET": "${local.state_bucket}"}
    assert tf.locals["state_bucket"] == "${var.project_id}-tfstate"
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    assert build["substitutions"] == {"_TF_STATE_BUCKET": "${PROJECT_ID}-tfstate"}


def test_readme_first_deploy_and_ci_read_the_same_settings_file() -> None:
    deploy = _readme_deploy()
    url = terraform_settings.bucket_url("<project>")
    assert f"gcloud storage cp {terraform_settings.LOCAL_COPY} {url}" in deploy
    assert f"gcloud storage cp\n   {url} {terraform_settings.LOCAL_COPY}" in deploy
    assert f"cp terraform/environments/example.tfvars {terraform_settings.LOCAL_COPY}" in deploy
    commands = re.findall(r"terraform (?:apply|plan|import)[^`]*", deploy)
    assert commands, "the README's deploy runs no terraform apply"
    for command in commands:
        command = re.sub(r"\s+", " ", command)
        assert terraform_settings.VAR_FILE_ARG in command, command
        assert not re.search(r"(^|\s)-var\s", command), f"a -var CI would not pass: {command}"
    # CI: the same object of the same bucket, the same local copy, the same argument.
    script = _build_steps()["settings"]["args"][-1]
    bucket = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())["substitutions"]
    ci_url = f"gs://{bucket['_TF_STATE_BUCKET']}/{terraform_settings.BUCKET_OBJECT}"
    assert ci_url.replace("${PROJECT_ID}", "<project>") == url
    assert terraform_settings.LOCAL_COPY in script
    assert terraform_settings.VAR_FILE_ARG in _build_steps()["terraform-plan"]["args"]
    assert "terraform init -backend-config=bucket=<project>-tfstate" in deploy


# --- names in prose -------------------------------------------------------------------------------


def _from_zero_steps() -> dict[int, str]:
    """The deploy guide's numbered steps under "From zero", by number."""
    section = _readme_deploy().split("## From zero", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^(\d+)\. ", section, flags=re.MULTILINE)
    return {int(number): text for number, text in zip(parts[1::2], parts[2::2], strict=True)}


def test_the_deploy_guide_names_what_terraform_makes(tf: Config) -> None:
    """Where the guide and the runbooks list secrets by hand (the values to add, the way to
    rotate each), the list is the Terraform's; its file table points at the Terraform for
    queues and secrets instead of naming them; its steps refer to the right step."""
    secrets = set(tf.locals["secrets"])
    secret_name = re.compile(r"\b(?:" + "|".join(map(re.escape, secrets)) + r")\b")
    steps = _from_zero_steps()
    assert sorted(steps) == list(range(1, len(steps) + 1)), sorted(steps)
    values = next(text for text in steps.values() if "gcloud secrets versions add" in text)
    missing = sorted(secrets - set(secret_name.findall(values)))
    assert not missing, f"the deploy guide's step adding secret values misses {missing}"
    rotate = (ROOT / "docs" / "runbooks" / "rotate-a-secret.md").read_text()
    missing = sorted(secrets - set(secret_name.findall(rotate)))
    assert not missing, f"rotate-a-secret.md misses {missing}"
    table = {
        line.split("|")[1].strip(): line
        for line in _readme_deploy().splitlines()
        if line.startswith("| `terraform/")
    }
    assert "`locals.secrets`" in table["`terraform/secrets.tf`"]
    assert "`locals.queues`" in table["`terraform/schedule.tf`"]
    for name in tf.locals["queues"]:
        assert f"`{name}` queue" not in table["`terraform/schedule.tf`"], name
    # "(step N)" points at the step that does it.
    for match in re.finditer(r"import it first \(step (\d+)\)", _readme_deploy()):
        assert "terraform import" in steps[int(match.group(1))], match.group(0)


def test_comments_point_at_pages_that_exist() -> None:
    """Comments once pointed at README sections that moved to the docs site; each page a
    Terraform comment, description or the settings example names exists, and none names the
    README's old sections."""
    texts = [
        *TERRAFORM.glob("*.tf"),
        TERRAFORM / "environments" / "example.tfvars",
        ROOT / "cloudbuild.yaml",
        ROOT / "tools" / "plan_guard.py",
    ]
    for path in texts:
        text = path.read_text()
        assert "README" not in text, f"{path.name} points at the README, whose sections moved"
        for page in re.findall(r"docs/[\w/.-]+\.md", text):
            assert (ROOT / page).is_file(), f"{path.name} names {page}, which does not exist"


_TF_NAME = re.compile(r"(?<![\w*.-])((?:[\w-]+/)*[\w-]+\.tf)(?![\w.])")


def test_every_tf_file_named_in_docs_and_comments_exists() -> None:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    suffixes = (".md", ".py", ".tf", ".tfvars", ".yaml", ".json", ".ts", ".js", ".css", ".html")
    texts = [
        path
        for path in listed
        if (path.endswith(suffixes) or Path(path).name in ("Makefile", "Dockerfile"))
        and not path.startswith(("node_modules/", "docs/vendor/"))
    ]
    assert "README.md" in texts
    assert "terraform/functions.tf" in texts
    missing: list[str] = []
    for path in texts:
        file = ROOT / path
        if not file.is_file():
            continue  # deleted in the work tree
        for name in _TF_NAME.findall(file.read_text(errors="replace")):
            target = ROOT / name if "/" in name else TERRAFORM / name
            if not target.is_file():
                missing.append(f"{path} names {name}")
    assert not missing, f"*.tf files named but absent: {missing}"

"""tools/create_admin: the first admin of a project, here against the local stack."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from shared.platform.context import Role
from tests.support import User, bearer, create_user, problem, sign_in


def _run(stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "tools.create_admin", *args],
        env={**env, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_creates_an_admin_who_can_administer(stack):
    email = f"first-admin-{uuid.uuid4().hex[:8]}@test.alodoktor.test"

    result = _run(stack, email, "--password", "first-admin-pw", "--name", "First Admin")

    assert result.returncode == 0, result.stderr
    assert "created admin" in result.stdout
    uid = result.stdout.split("(")[1].split(")")[0]
    admin = sign_in(stack, User(uid, email, "first-admin-pw", Role.ADMIN))
    assert admin.get("/session").json()["role"] == "admin"
    assert admin.get("/admin-users", params={"limit": 1}).status_code == 200


def test_promotes_an_existing_account_and_ends_its_sessions(stack):
    user = create_user(stack, Role.PATIENT)
    old = sign_in(stack, user)

    result = _run(stack, user.email)

    assert result.returncode == 0, result.stderr
    assert "is now an admin" in result.stdout
    problem(old.get("/session"), 401)
    assert bearer(stack, user).get("/admin-users", params={"limit": 1}).status_code == 200


def test_reports_a_missing_project_in_one_line(stack):
    env = {
        k: v for k, v in os.environ.items() if k not in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")
    }
    result = subprocess.run(
        [sys.executable, "-m", "tools.create_admin", "x@example.com", "--password", "abcdefgh1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: set GOOGLE_CLOUD_PROJECT or pass --project"

"""The local stack's housekeeping, without starting it: its temporary workdir is removed when it
stops (kept when asked, as a failed test run asks), a workdir it was given is never removed,
and a missing Firestore emulator is named with how to install it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dev import stack as local


def test_a_stopped_stack_removes_its_temporary_workdir_unless_asked_to_keep_it():
    s = local.Stack()
    (s.workdir / "gateway.log").write_text("a line\n")
    s.stop()
    assert not s.workdir.exists()

    kept = local.Stack()
    (kept.workdir / "relay.log").write_text("a line\n")
    kept.stop(keep_files=True)
    assert (kept.workdir / "relay.log").read_text() == "a line\n"
    shutil.rmtree(kept.workdir)


def test_a_workdir_the_stack_was_given_is_never_removed(tmp_path: Path):
    given = tmp_path / "alodoktor-stack-mine"
    given.mkdir()
    local.Stack(workdir=given).stop()
    assert given.is_dir()


def test_a_missing_firestore_emulator_is_named_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setattr(local, "firestore_emulator", lambda: tmp_path / "cloud_firestore_emulator")
    with pytest.raises(local.StackError, match="apt install google-cloud-cli-firestore-emulator"):
        local.check_prerequisites()


def test_the_local_origin_answers_a_missing_page_or_a_dotfile_with_the_sites_404_page():
    import json

    from werkzeug.test import Client

    from dev.gateway import FIREBASE_JSON, hosting

    config = json.loads(FIREBASE_JSON.read_text())
    config["hosting"]["rewrites"] = []  # pages only: no function is loaded
    site = Client(hosting({}, config))
    page = site.get("/")
    assert page.status_code == 200
    assert b'<script type="module" src="/app.js">' in page.data
    for missing in ("/no-such-page", "/.gitignore", "/a/../../README.md"):
        answer = site.get(missing)
        assert answer.status_code == 404, missing
        assert b"Page not found" in answer.data
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]

"""The zips Terraform uploads are exactly the bundles tools/bundle.py builds (and
tests/test_bundle.py serves), named by their content so that new code redeploys and the same
code does not."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from tools import bundle, deploy_bundles


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    out = tmp_path_factory.mktemp("bundles") / "out"
    return out, deploy_bundles.build_all(out)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_every_function_has_a_zip_of_exactly_its_bundle(
    built: tuple[Path, dict[str, dict[str, str]]], tmp_path: Path
) -> None:
    out, manifest = built
    assert sorted(manifest) == bundle.function_names()
    assert json.loads((out / deploy_bundles.MANIFEST).read_text()) == manifest
    for name, entry in manifest.items():
        data = (out / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["file"] == f"{name}-{entry['sha256']}.zip"
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            zipped = {info.filename: archive.read(info) for info in archive.infolist()}
        expected = _files(bundle.build(name, tmp_path / name))
        assert zipped == expected, f"{name}: the zip is not tools/bundle.py's bundle"
        assert {"main.py", "requirements.txt"} <= set(zipped)


def test_same_code_same_name_new_code_new_name(
    built: tuple[Path, dict[str, dict[str, str]]], tmp_path: Path
) -> None:
    _, manifest = built
    # Built again (other paths, other file times): the very same bytes, so nothing redeploys.
    again = deploy_bundles.build_all(tmp_path / "again", names=bundle.function_names()[:2])
    for name, entry in again.items():
        assert entry == manifest[name]

    source = tmp_path / "src"
    (source / "shared").mkdir(parents=True)
    (source / "main.py").write_text("print('a')\n")
    (source / "shared" / "x.py").write_text("X = 1\n")
    first = deploy_bundles.zip_dir(source)
    os.utime(source / "main.py", (0, 0))
    assert deploy_bundles.zip_dir(source) == first, "a file's time changed the zip"
    (source / "shared" / "x.py").write_text("X = 2\n")
    assert deploy_bundles.zip_dir(source) != first, "a code change kept the zip"


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "old.zip").write_text("")
    with pytest.raises(bundle.BundleError, match="not an empty directory"):
        deploy_bundles.build_all(tmp_path)


def test_ci_builds_the_bundles_where_its_plan_reads_them() -> None:
    """cloudbuild.yaml's bundles step writes (from the repository's root) the directory its
    plan hands Terraform (run in terraform/) as bundles_dir, the one variable the build
    decides instead of the environment's settings file."""
    import yaml  # type: ignore[import-untyped]

    from tools import terraform_settings

    root = Path(__file__).resolve().parent.parent
    steps = {s["id"]: s for s in yaml.safe_load((root / "cloudbuild.yaml").read_text())["steps"]}
    written = steps["bundles"]["args"][-1]
    plan = steps["terraform-plan"]
    assert plan["dir"] == "terraform"
    read = terraform_settings.CI_VARIABLES["bundles_dir"]
    assert f"TF_VAR_bundles_dir={read}" in plan["env"]
    assert (root / plan["dir"] / read).resolve() == (root / written).resolve()
    assert "bundles_dir" not in terraform_settings.assigned(terraform_settings.EXAMPLE.read_text())

"""Zip every function's bundle for Terraform, each named by its content hash.

    python -m tools.deploy_bundles <out-dir>     # e.g. build/bundles

For each folder under functions/ this builds the bundle exactly as `tools.bundle` does (the
unit tests/test_bundle.py serves and tests), zips it reproducibly (sorted entries, fixed
timestamps and modes, so the same source always gives the same bytes) and writes
`<function>-<sha256>.zip` beside a `manifest.json`:

    {"session": {"file": "session-<sha256>.zip", "sha256": "<sha256>"}, ...}

terraform/ reads the manifest (variable `bundles_dir`) and uploads each zip as
`functions/<function>/<sha256>.zip`: a code change is a new object name, so Cloud Functions
rebuilds; the same code is the same name, so nothing redeploys.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

from tools import bundle

MANIFEST = "manifest.json"
# Zip's epoch: any fixed time makes the archive's bytes depend on the content alone.
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def zip_dir(root: Path) -> bytes:
    """The files under `root` as a reproducible zip (paths relative to `root`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def build_all(out: Path, names: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Write every function's zip and the manifest into `out`; return the manifest."""
    if out.exists() and any(out.iterdir()):
        raise bundle.BundleError(f"{out} exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = {}
    for name in names if names is not None else bundle.function_names():
        with tempfile.TemporaryDirectory() as tmp:
            data = zip_dir(bundle.build(name, Path(tmp) / "bundle"))
        digest = hashlib.sha256(data).hexdigest()
        file = f"{name}-{digest}.zip"
        (out / file).write_bytes(data)
        manifest[name] = {"file": file, "sha256": digest}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.deploy_bundles",
        description="Zip every function's deployable bundle for Terraform.",
    )
    parser.add_argument("out", type=Path, help="output directory (absent or empty)")
    args = parser.parse_args(argv)
    try:
        manifest = build_all(args.out)
    except bundle.BundleError as exc:
        print(f"deploy_bundles: error: {exc}", file=sys.stderr)
        return 2
    for name, entry in manifest.items():
        print(f"{name:16} {entry['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

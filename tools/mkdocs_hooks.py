"""MkDocs hooks of the docs site (mkdocs.yml `hooks:`): the site works offline.

Material for MkDocs renders Mermaid diagrams with the `mermaid` global, and loads it from
unpkg.com when the page has none. The site serves its own copy instead: npm's `mermaid`
(pinned in package.json, installed by `npm ci`) goes into the built site as
`vendor/mermaid.min.js`, which mkdocs.yml's `extra_javascript` loads before any diagram is
drawn, so no page asks another host for anything (tests/test_docs_site.py checks it).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
MERMAID = ROOT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
MERMAID_URI = "vendor/mermaid.min.js"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    if not MERMAID.is_file():
        raise PluginError(
            f"{MERMAID.relative_to(ROOT)} is missing: run `npm ci` (make docs does) to get "
            "the pinned mermaid the site's diagrams are drawn with"
        )
    files.append(File.generated(config, MERMAID_URI, abs_src_path=str(MERMAID)))
    return files

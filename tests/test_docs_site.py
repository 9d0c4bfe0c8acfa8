"""The docs site (mkdocs.yml, docs/) builds in strict mode and its pages render in Chromium
offline: no console error, no failed request, no request to any host but the local one, and
its Mermaid diagrams drawn as SVG with the site's own copy of mermaid.

Screenshots of a few pages go to build/docs-screenshots/ (a test artifact, not committed).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "docs-screenshots"
# Pages with a diagram each, and one reference page.
DIAGRAMS = ("", "guides/architecture/", "guides/payments/", "guides/audit/")
SCREENSHOTS = {"home": "", "pipeline": "guides/architecture/", "routes": "reference/routes/"}


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = _build(ROOT / "mkdocs.yml", out)
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stderr}"
    return out


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Visit:
    """One page in a fresh context, recording whatever went wrong while it loaded."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.base = base

        def route(r: Route) -> None:
            if urlsplit(r.request.url).hostname != "127.0.0.1":
                self.problems.append(f"a request left the machine: {r.request.url}")
                r.abort()
            else:
                r.continue_()

        self.context.route("**/*", route)
        # Material draws each diagram into a closed shadow root; open it, so the test can see
        # the SVG mermaid drew (this changes nothing else on the page).
        self.context.add_init_script(
            "const attach = Element.prototype.attachShadow;"
            "Element.prototype.attachShadow = function (init) {"
            "  return attach.call(this, { ...init, mode: 'open' }); };"
        )
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text} {m.location}")
                if m.type == "error"
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        # A request the next navigation cut short (the favicon, say) is not a failure; any
        # other is (requests elsewhere are aborted and reported by `route` above).
        self.page.on(
            "requestfailed",
            lambda r: (
                self.problems.append(f"failed: {r.url} {r.failure}")
                if urlsplit(r.url).hostname == "127.0.0.1" and r.failure != "net::ERR_ABORTED"
                else None
            ),
        )
        self.page.on(
            "response",
            lambda r: self.problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None,
        )

    def open(self, path: str) -> Page:
        self.page.goto(self.base + path, wait_until="networkidle")
        return self.page

    def close(self) -> None:
        self.context.close()


def _pages(site: Path) -> list[str]:
    return sorted(
        str(p.relative_to(site).parent).replace(".", "").strip("/") + "/"
        if p.parent != site
        else ""
        for p in site.rglob("index.html")
        if "assets" not in p.parts and "vendor" not in p.parts
    )


def test_every_page_renders_without_console_errors_or_requests_elsewhere(
    site: Path, served: str, browser: Browser
) -> None:
    pages = _pages(site)
    assert {"", "guides/local-stack/", "reference/routes/", "runbooks/"} <= set(pages), pages
    failures: dict[str, list[str]] = {}
    visit = Visit(browser, served)
    try:
        for path in pages:
            visit.problems.clear()
            page = visit.open(path)
            assert page.locator("h1").count() >= 1, path
            if visit.problems:
                failures[path or "/"] = list(visit.problems)
    finally:
        visit.close()
    assert not failures, failures


def test_the_diagrams_render_as_svg_with_the_sites_own_mermaid(
    site: Path, served: str, browser: Browser
) -> None:
    assert (site / "vendor" / "mermaid.min.js").is_file()
    for path in DIAGRAMS:
        visit = Visit(browser, served)
        try:
            page = visit.open(path)
            diagram = page.locator(".mermaid svg").first
            diagram.wait_for(state="visible", timeout=20_000)
            box = diagram.bounding_box()
            assert box is not None, path
            assert box["height"] > 100, (path, box)
            assert page.locator("pre.mermaid").count() == 0, f"{path}: a diagram left as text"
            assert page.evaluate("typeof mermaid") == "object", path
            scripts = page.evaluate("[...document.scripts].map(s => s.src)")
            assert any(s.endswith("/vendor/mermaid.min.js") for s in scripts), scripts
            assert not visit.problems, (path, visit.problems)
        finally:
            visit.close()


def test_screenshots_of_home_a_guide_and_a_reference_page(
    site: Path, served: str, browser: Browser
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in SCREENSHOTS.items():
        visit = Visit(browser, served)
        try:
            page = visit.open(path)
            if page.locator(".mermaid").count():
                page.locator(".mermaid svg").first.wait_for(state="visible", timeout=20_000)
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=name != "routes")
            assert not visit.problems, (path, visit.problems)
        finally:
            visit.close()
    text = (site / "reference" / "routes" / "index.html").read_text()
    assert "POST /paypal-capture" in text
    assert "service:scheduler" in text


def test_the_search_finds_a_route(site: Path, served: str, browser: Browser) -> None:
    visit = Visit(browser, served)
    try:
        page = visit.open("")
        page.keyboard.press("/")  # Material's shortcut to the search box
        page.keyboard.type("payouts/tasks/send")
        results = page.locator(".md-search-result__item a")
        results.first.wait_for(state="visible", timeout=20_000)
        hrefs = [results.nth(i).get_attribute("href") or "" for i in range(results.count())]
        assert any("/reference/routes/" in h for h in hrefs), hrefs
        assert not visit.problems, visit.problems
    finally:
        visit.close()


def test_a_broken_link_or_a_page_left_out_fails_the_strict_build(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "mkdocs_hooks.py", copy / "tools" / "mkdocs_hooks.py")
    (copy / "node_modules").symlink_to(ROOT / "node_modules")
    guide = copy / "docs" / "guides" / "notify.md"
    good = guide.read_text()

    guide.write_text(good + "\nSee [the missing page](no-such-page.md).\n")
    broken = _build(copy / "mkdocs.yml", tmp_path / "out")
    assert broken.returncode != 0
    assert "no-such-page.md" in broken.stderr

    guide.write_text(good)
    (copy / "docs" / "guides" / "orphan.md").write_text("# Not in the navigation\n")
    orphan = _build(copy / "mkdocs.yml", tmp_path / "out")
    assert orphan.returncode != 0
    assert "orphan.md" in orphan.stderr

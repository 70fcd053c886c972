"""The README and docs/ hold together: links resolve, the README stays short, nothing cites a file the
repository does not hold."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _prose(page: Path) -> str:
    """The page without its code blocks: a `#` or `[x](y)` inside code is not markdown."""
    return FENCE.sub("", page.read_text())


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", _prose(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(ROOT) or not dest.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, broken


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    commands = re.findall(r"^make \w+", text, re.M)
    assert commands[:2] == ["make demo", "make test"]


def test_the_readme_links_every_docs_page() -> None:
    linked = {t.partition("#")[0] for t in _relative_links(ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in PAGES[1:] if p.name != "index.md"}  # index.md: the site's home
    assert pages <= linked, sorted(pages - linked)


def test_the_install_line_does_not_assume_the_checkouts_folder_name() -> None:
    for page in PAGES:
        assert "./runpod-queue" not in page.read_text(), page.name
    assert 'pip install "$(pwd)[all]"' in (ROOT / "README.md").read_text()


# Built from parts so this file does not match itself.
OUTSIDE = ["../" + "shared/", "perf-notes" + ".md", "shared/" + "runpod-api.md", "shared/" + "design.md"]


def test_no_tracked_file_cites_a_file_outside_the_repository() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = []
    for name in files.stdout.splitlines():
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary (docs/console.png)
        found += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert not found, found

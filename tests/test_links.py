"""The documentation stands on its own: every relative link in README.md and docs/*.md
resolves to a file (and heading) inside the repository, and nothing points outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in _without_code(page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            title = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(title.replace(" ", "-"))
    return out


def links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(_without_code(page.read_text()))]


def test_the_pages_exist_and_have_links():
    assert len(PAGES) > 5 and (ROOT / "docs" / "paper.md") in PAGES
    assert "docs/paper.md" in links(ROOT / "README.md")


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` that do not resolve inside ``root``."""
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if root not in dest.parents:
            bad.append(f"{target} (outside the repository)")
        elif not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no such heading)")
    return bad


def test_the_checker_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "outside.md").write_text("# Out\n")
    page = tmp_path / "docs" / "a.md"
    (tmp_path / "docs" / "b.md").write_text("# The paper's E3 network\n")
    page.write_text(
        "# Top\n[ok](b.md#the-papers-e3-network) [ok](#top) [web](https://x.org/y)\n"
        "[gone](c.md) [head](b.md#nope) [up](../outside.md) [self](#missing)\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    assert broken(page, tmp_path / "docs") == [
        "c.md (no such file)",
        "b.md#nope (no such heading)",
        "../outside.md (outside the repository)",
        "#missing (no such heading)",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repository(page):
    assert not broken(page), f"{page.name}: {broken(page)}"


def test_nothing_points_at_files_outside_the_repository():
    texts = [*PAGES, *sorted((ROOT / "src").rglob("*.py"))]
    hits = [str(p.relative_to(ROOT)) for p in texts if "shared/" in p.read_text()]
    assert not hits

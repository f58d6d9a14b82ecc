"""docs/architecture.md's folder map names every module under src/feedback_alignment, and
nothing that is not there; the README links to the page."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "feedback_alignment"
PAGE = ROOT / "docs" / "architecture.md"


def _mapped() -> list[str]:
    table = PAGE.read_text().split("## Folder map", 1)[1]
    return re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)


def test_the_folder_map_matches_the_package():
    modules = {
        p.relative_to(PKG).as_posix()
        for p in PKG.rglob("*")
        if p.suffix in (".py", ".cpp") and "__pycache__" not in p.parts
    }
    mapped = _mapped()
    assert len(mapped) == len(set(mapped)), "a module is listed twice"
    assert sorted(set(mapped) - modules) == [], "listed but not in the package"
    assert sorted(modules - set(mapped)) == [], "in the package but not in the map"


def test_the_walk_names_modules_that_exist():
    walk = PAGE.read_text().split("## Folder map", 1)[0]
    for name in re.findall(r"`((?:twolayer|reproduce|experiments|deep)/[\w/]*\.py)`", walk):
        assert (PKG / name).exists(), name
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()

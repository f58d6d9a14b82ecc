"""Packaging metadata in the current form: a license expression, not the deprecated table
that makes `pip install -e .` warn (setuptools >= 77 reads it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_and_the_build_backend_reads_it():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))
    (req,) = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    major = int(re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", req).group(1))
    assert major >= 77

"""Experiments at scale: declarative sweeps, a durable results store, executors and plots.

The Python API behind ``fa sweep``, ``fa results`` and ``fa plot`` (docs/sweeps.md)::

    from feedback_alignment.experiments import run_study, Store
    report = run_study("study.toml", "study.sqlite", executor="local", workers=2)
    rows = Store("study.sqlite").runs(status="done", activation="linear")

``load_spec``/``parse_spec`` validate a spec, ``prepare`` plans it without running,
``run_study`` runs or resumes it, :class:`Store` reads the results (plain dicts and numpy
arrays), ``export`` writes CSV/Parquet, and :mod:`.plots` draws figures from a store.
"""

from __future__ import annotations

from ..executors import EXECUTORS, Dask, Inline, LocalPool, get_executor
from .export import export
from .planner import Pack, plan
from .runner import run_pack
from .spec import TWOLAYER_FIELDS, Run, Spec, load_spec, parse_spec
from .store import Store
from .study import StudyReport, prepare, run_study

__all__ = [
    "EXECUTORS",
    "TWOLAYER_FIELDS",
    "Dask",
    "Inline",
    "LocalPool",
    "Pack",
    "Run",
    "Spec",
    "Store",
    "StudyReport",
    "export",
    "get_executor",
    "load_spec",
    "parse_spec",
    "plan",
    "prepare",
    "run_pack",
    "run_study",
]

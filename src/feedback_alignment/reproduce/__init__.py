"""``fa reproduce``: the paper's experiments E1, E2 and E3, and E5 (the authors' dropout runs),
with figures and a claim report.

One command runs a profile (smoke, quick, standard, full) of the experiments, writes every
plotted number as long-form CSV, draws the figures with theory overlays, and writes
``report.md``/``report.html`` with a computed verdict for each claim. See docs/reproduce.md.
"""

from __future__ import annotations

from .profiles import EXPERIMENTS, PROFILES, Profile, get_profile

__all__ = ["EXPERIMENTS", "PROFILES", "Profile", "get_profile", "reproduce"]


def reproduce(*args, **kwargs):
    """Run a reproduction; see :func:`feedback_alignment.reproduce.cli.reproduce`."""
    from .cli import reproduce as _reproduce

    return _reproduce(*args, **kwargs)

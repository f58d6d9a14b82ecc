"""feedback-alignment: training with random feedback weights, and why it works."""

from __future__ import annotations

__version__ = "0.1.0"

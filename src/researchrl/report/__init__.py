"""`researchrl report`: a run directory as one self-contained HTML page (curves, eval tables, trajectories)."""

from __future__ import annotations

from researchrl.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]

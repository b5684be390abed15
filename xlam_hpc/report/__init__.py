"""`xlam-hpc report`: an HTML page with PNG figures of a run directory or a sweep directory.

load.py reads the run (history.jsonl, config.yaml, metrics.json, launch/ledger.json, eval/*.json),
summary.py turns it into values, plots.py draws the PNGs, page.py lays out the HTML, render.py ties them.
"""

from __future__ import annotations

from xlam_hpc.report.render import write_report

__all__ = ["write_report"]

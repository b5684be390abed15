"""convert stage: raw agent datasets → validated unified records (one module per source format)."""

from __future__ import annotations

from xlam_hpc.convert.base import Converter, Reject
from xlam_hpc.convert.pipeline import ConvertConfig, ConvertSummary, convert_files

__all__ = ["CONVERTERS", "ConvertConfig", "ConvertSummary", "Converter", "Reject", "convert_files"]

# The one registry: `--format` name → converter class. Order breaks ties in `--format auto`.
CONVERTERS: dict[str, type[Converter]] = {}

# --- block A (function-calling and chat formats) ---
# --- end block A ---

# --- block B (agent environment formats) ---
# --- end block B ---

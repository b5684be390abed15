"""xlam-hpc: convert → shard → stream → collate → train → launch for tool-using LLM agents."""

from __future__ import annotations

__version__ = "0.1.0"

from xlam_hpc.errors import ConfigError, DataError, ResumeError, XlamError

__all__ = ["ConfigError", "DataError", "ResumeError", "XlamError", "__version__"]

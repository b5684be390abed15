"""Error types. The CLI prints any XlamError as one clear line and exits non-zero, never a traceback."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "ResumeError", "ShardError", "XlamError"]


class XlamError(Exception):
    """Base class of every error the user can cause with input, configuration or environment."""

    exit_code = 2


class ConfigError(XlamError):
    """A recipe, CLI value or option is invalid."""


class DataError(XlamError):
    """Input data is unreadable or invalid; the message names the file and line or record id."""


class ShardError(DataError):
    """A shard or manifest is missing, truncated, or fails its integrity check."""


class ResumeError(XlamError):
    """A saved state does not match the current configuration (fingerprint) or is unusable."""

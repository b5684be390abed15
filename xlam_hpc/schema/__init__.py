"""Unified trajectory format: types, validation, JSON Schema, ActionStudio export."""

from __future__ import annotations

from xlam_hpc.schema.export import json_schema, to_actionstudio
from xlam_hpc.schema.types import SCHEMA_VERSION, FunctionSpec, Preference, ToolCall, Trajectory, Turn
from xlam_hpc.schema.validate import RecordInvalid, decode_record, validate_preference, validate_trajectory

__all__ = [
    "SCHEMA_VERSION",
    "FunctionSpec",
    "Preference",
    "RecordInvalid",
    "ToolCall",
    "Trajectory",
    "Turn",
    "decode_record",
    "encode_record",
    "json_schema",
    "to_actionstudio",
    "validate_preference",
    "validate_trajectory",
]

import msgspec as _msgspec

_encoder = _msgspec.json.Encoder()


def encode_record(rec: Trajectory | Preference) -> bytes:
    """Compact JSON bytes of a record (one JSONL line without the newline)."""
    return _encoder.encode(rec)

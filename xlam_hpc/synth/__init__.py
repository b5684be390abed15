"""Deterministic synthetic datasets in the unified format (`xlam-hpc synth`)."""

from __future__ import annotations

from xlam_hpc.synth.toolcall import toolcall_records, write_toolcall_dataset

__all__ = ["toolcall_records", "write_toolcall_dataset"]

"""collate stage: records → token ids with assistant-only loss masks → packed or padded batches."""

from __future__ import annotations

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.collate.encode import PairSample, Sample, SampleEncoder
from xlam_hpc.collate.packing import (
    IGNORE_INDEX,
    best_fit_decreasing,
    collate_dpo,
    collate_packed,
    collate_padded,
)
from xlam_hpc.collate.template import BUILTIN_TEMPLATE, make_renderer
from xlam_hpc.collate.tokenizer import load_tokenizer, tokenizer_fingerprint

__all__ = [
    "BUILTIN_TEMPLATE",
    "IGNORE_INDEX",
    "CollateConfig",
    "PairSample",
    "Sample",
    "SampleEncoder",
    "best_fit_decreasing",
    "collate_dpo",
    "collate_packed",
    "collate_padded",
    "load_tokenizer",
    "make_renderer",
    "tokenizer_fingerprint",
]

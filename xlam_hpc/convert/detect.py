"""`--format auto`: score every converter on the first records of a file and pick the best."""

from __future__ import annotations

from pathlib import Path

from xlam_hpc.convert.base import Converter
from xlam_hpc.convert.reader import RawRecord, iter_raw
from xlam_hpc.errors import ConfigError, DataError

__all__ = ["detect_format", "get_converter"]

_SNIFF_RECORDS = 8
_MIN_CONFIDENCE = 0.5


def get_converter(name: str) -> type[Converter]:
    """The converter class registered as `name`; ConfigError listing the valid names otherwise."""
    from xlam_hpc.convert import CONVERTERS

    try:
        return CONVERTERS[name]
    except KeyError:
        raise ConfigError(f"unknown format '{name}'. Valid formats: auto, {', '.join(sorted(CONVERTERS))}") from None


def detect_format(path: Path, *, max_record_bytes: int) -> type[Converter]:
    """Best-scoring converter for the first records of `path`; DataError if none is confident."""
    from xlam_hpc.convert import CONVERTERS

    sample: list[RawRecord] = []
    for item in iter_raw(path, max_record_bytes=max_record_bytes):
        if isinstance(item, RawRecord):
            sample.append(item)
            if len(sample) >= _SNIFF_RECORDS:
                break
    if not sample:
        raise DataError(f"{path}: no readable record to detect the format from (empty or all lines invalid)")
    scores = {name: sum(cls.sniff(r.obj) for r in sample) / len(sample) for name, cls in CONVERTERS.items()}
    best = max(scores, key=lambda n: scores[n])
    if scores[best] < _MIN_CONFIDENCE:
        first = sample[0].obj
        shape = sorted(first)[:12] if isinstance(first, dict) else type(first).__name__
        raise DataError(
            f"{path}: cannot detect the format (first record keys: {shape}); pass --format "
            f"({', '.join(sorted(CONVERTERS))})"
        )
    return CONVERTERS[best]

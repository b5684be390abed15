"""Reject log shared by every stage that reads records: one JSON line per rejection, counted by reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

__all__ = ["RejectLog"]


class RejectLog:
    """Appends `{file, position, record_id, reason, message}` lines to `path` and counts reasons."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("w", encoding="utf-8")
        self.counts: Counter[str] = Counter()

    def add(self, file: str, position: str, reason: str, message: str, record_id: str | None = None) -> None:
        self.counts[reason] += 1
        row = {
            "file": file,
            "position": position,
            "record_id": record_id,
            "reason": reason,
            "message": message,
        }
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RejectLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

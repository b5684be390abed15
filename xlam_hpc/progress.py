"""Progress bars for the batch commands: tqdm on a terminal, plain periodic lines in a log file.

tqdm alone either hides the bar off a terminal (disable=None) or fills a Slurm log with carriage-return
redraws; here the same bar writes one plain line at most every `interval_s` (and a last one at the end).
"""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["progress_bar"]


class _Lines(io.TextIOBase):
    """tqdm's redraws as whole lines (no carriage returns) for a stream that is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.strip("\r\n").rstrip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    iterable: Any = None, *, enabled: bool = True, interval_s: float = 30.0, stream: TextIO | None = None, **kwargs: Any
) -> tqdm:
    """A tqdm bar (total, desc, unit, ... as for tqdm): drawn on a terminal, plain lines otherwise, nothing
    when not `enabled`."""
    stream = stream or sys.stderr
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if stream.isatty():
        return tqdm(iterable, file=stream, **kwargs)
    return tqdm(
        iterable, file=_Lines(stream), mininterval=interval_s, maxinterval=interval_s, ascii=True, ncols=100, **kwargs
    )

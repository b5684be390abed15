"""Progress off a terminal (a Slurm log): whole plain lines, no carriage-return redraws."""

from __future__ import annotations

import io

from xlam_hpc.progress import progress_bar


def test_plain_lines_off_a_terminal():
    log = io.StringIO()  # isatty() is False, as for a Slurm output file
    for _ in progress_bar(range(5), desc="shard a.jsonl", unit="rec", interval_s=0, stream=log):
        pass
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines and all(x.startswith("shard a.jsonl:") for x in lines)
    assert "5/5" in lines[-1]


def test_disabled_writes_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(3), desc="convert", enabled=False, stream=log):
        pass
    assert log.getvalue() == ""

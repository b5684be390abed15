"""Shared by the converter tests: run `convert_files` the way the CLI does and read everything it wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.schema import decode_record


def run_convert(tmp_path: Path, inputs: list[Path], fmt: str, name: str = "out") -> tuple[Any, list[dict], list[dict]]:
    """(summary, converted records as dicts, reject rows); every written line must decode and validate."""
    out = tmp_path / f"{name}.jsonl"
    # overwrite: a test may convert twice under one name
    cfg = ConvertConfig(inputs=[str(p) for p in inputs], output=str(out), format=fmt, progress=False, overwrite=True)
    summary = convert_files(cfg, log=lambda *_: None)
    lines = out.read_text(encoding="utf-8").splitlines()
    for line in lines:
        decode_record(line)
    rejects = [json.loads(r) for r in (tmp_path / f"{name}.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, [json.loads(line) for line in lines], rejects


def turn(role: str, value: str) -> dict[str, str]:
    """A ShareGPT turn."""
    return {"from": role, "value": value}

"""`xlam-hpc synth`: deterministic synthetic datasets (placeholder until the runner lands)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_synth_parser"]


def add_synth_parser(sub: Any) -> None:
    p = sub.add_parser("synth", help="write a deterministic synthetic dataset (unified JSONL): toolcall")
    p.set_defaults(handler=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    raise NotImplementedError("xlam-hpc synth")

"""`xlam-hpc report`: HTML + PNG report of a run or sweep (placeholder until the runner lands)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_report_parser"]


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="HTML + PNG report of a run or sweep directory")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    raise NotImplementedError("xlam-hpc report")

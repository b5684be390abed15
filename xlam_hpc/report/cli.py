"""`xlam-hpc report RUN_DIR|SWEEP_DIR [-o report.html] [--tasks]`."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_report_parser"]


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="HTML + PNG report of a run or sweep directory")
    p.add_argument("directory", metavar="RUN_DIR|SWEEP_DIR")
    p.add_argument("-o", "--output", help="the HTML file (PNGs next to it); default DIR/report/report.html")
    p.add_argument("--tasks", action="store_true", help="sweep: render each task's own report too, and link them")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from xlam_hpc.report import write_report

    path = write_report(args.directory, args.output, tasks=args.tasks)
    print(path)
    return 0

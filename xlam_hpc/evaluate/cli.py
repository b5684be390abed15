"""`xlam-hpc eval`: function-calling evaluation of a model or run (placeholder until the runner lands)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_eval_parser"]


def add_eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="function-calling evaluation of a model or run (held-out data, BFCL)")
    p.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    raise NotImplementedError("xlam-hpc eval")

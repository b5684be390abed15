"""`xlam-hpc synth`: deterministic synthetic datasets in the unified format."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_synth_parser"]


def add_synth_parser(sub: Any) -> None:
    p = sub.add_parser("synth", help="write a deterministic synthetic dataset (unified JSONL): toolcall")
    kinds = p.add_subparsers(dest="synth_kind", metavar="KIND", required=True)
    t = kinds.add_parser(
        "toolcall",
        help="function calling: typed tools, single/parallel/multi-turn calls and no-call requests; "
        "DIR/train.jsonl and DIR/heldout.jsonl (held out by request phrasing and argument values)",
    )
    t.add_argument("-o", "--output-dir", required=True, metavar="DIR")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--train", type=int, default=8000, help="training records (default 8000)")
    t.add_argument("--heldout", type=int, default=200, help="held-out records (default 200)")
    t.set_defaults(handler=_cmd_toolcall)


def _cmd_toolcall(args: argparse.Namespace) -> int:
    from xlam_hpc.errors import ConfigError
    from xlam_hpc.synth.toolcall import write_toolcall_dataset

    if args.train < 1 or args.heldout < 1:
        raise ConfigError(f"synth toolcall: --train and --heldout must be >= 1, got {args.train}, {args.heldout}")
    summary = write_toolcall_dataset(args.output_dir, seed=args.seed, train=args.train, heldout=args.heldout)
    for split in ("train", "heldout"):
        kinds = ", ".join(f"{k} {v}" for k, v in summary[f"{split}_kinds"].items())
        print(f"{split:8s}{summary[split]} ({kinds})")
    return 0

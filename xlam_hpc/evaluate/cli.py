"""`xlam-hpc eval`: function-calling evaluation of a model or run (held-out unified data, BFCL categories)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_eval_parser"]


def add_eval_parser(sub: Any) -> None:
    from xlam_hpc.evaluate.runner import BACKENDS, STYLES

    p = sub.add_parser(
        "eval",
        help="function-calling evaluation of a model or run (held-out data, BFCL)",
        description="Greedy generation on held-out tool-calling turns and/or BFCL questions, with the chat template "
        "training used; writes results.json, results.md and a per-item JSONL (resumable). docs/evaluation.md",
    )
    p.add_argument("model", help="model folder (e.g. RUN/final), run directory, or with --untrained a recipe")
    p.add_argument("--data", nargs="+", default=[], metavar="PATH", help="held-out unified JSONL or shard directories")
    p.add_argument("--bench", nargs="+", default=[], metavar="NAME", help="BFCL categories, e.g. bfcl-simple")
    p.add_argument(
        "-o",
        "--output",
        help="results.json (default RUN_DIR/eval/results.json, with --untrained RUN_DIR/eval/untrained.json, "
        "else ./eval-results.json)",
    )
    p.add_argument("--limit", type=int, help="first N items of each data file and bench")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--style", choices=STYLES, default="auto", help="tool-call syntax (auto: from the chat template)")
    p.add_argument("--untrained", action="store_true", help="the recipe's model before training (same seed)")
    p.add_argument("--overwrite", action="store_true", help="start the results over instead of resuming them")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: vLLM when installed and on a GPU")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_eval)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _cmd_eval(args: argparse.Namespace) -> int:
    from xlam_hpc.evaluate.runner import EvalConfig, run_eval

    cfg = EvalConfig(
        model=args.model,
        data=args.data,
        benches=args.bench,
        output=args.output,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        style=args.style,
        progress=not args.no_progress,
        resume=not args.overwrite,
        untrained=args.untrained,
        backend=args.backend,
        device=args.device,
    )
    results = run_eval(cfg, log=lambda msg: print(msg, file=sys.stderr))
    m = results["metrics"]["overall"]
    print(
        f"{results['n']} items: parse rate {_pct(m.get('parse_rate'))}, name acc {_pct(m.get('tool_name_accuracy'))}, "
        f"arg exact {_pct(m.get('argument_exact_match'))}, whole-call exact {_pct(m.get('whole_call_exact_match'))}, "
        f"AST {_pct(m.get('ast_accuracy'))}, irrelevance {_pct(m.get('irrelevance_accuracy'))}"
    )
    return 0

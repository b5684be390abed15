"""`xlam-hpc` command line: one subcommand per stage of the data flow.

convert → shard → inspect → render → stream → train → submit/sweep/status → export. Heavy imports (torch, deepspeed)
happen inside the handlers so `xlam-hpc --help` and the data commands start fast. Every XlamError is
printed as one line naming the file/record at fault; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from xlam_hpc import __version__
from xlam_hpc.errors import ConfigError, XlamError

if TYPE_CHECKING:
    from xlam_hpc.collate import CollateConfig
    from xlam_hpc.recipe import Recipe

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _cmd_convert(args: argparse.Namespace) -> int:
    from xlam_hpc.convert import ConvertConfig, convert_files

    cfg = ConvertConfig(
        inputs=args.inputs,
        output=args.output,
        format=args.format,
        source=args.source,
        min_score=args.min_score,
        dedup=args.dedup,
        strict=args.strict,
        emit=args.emit,
        max_record_bytes=args.max_record_bytes,
        rejects=args.rejects,
        summary=args.summary,
        progress=not args.no_progress,
        glob=args.glob,
        overwrite=args.overwrite,
        messages_key=args.messages_key,
    )
    summary = convert_files(cfg, log=lambda msg: print(msg, file=sys.stderr))
    s = summary.to_dict()
    reasons = ", ".join(f"{k}: {v}" for k, v in s["rejected_by_reason"].items()) or "none"
    print(
        f"read {s['read']}, converted {s['converted']}, rejected {s['rejected']} ({reasons}), "
        f"below --min-score {s['filtered_min_score']}, duplicates removed {s['duplicates_removed']}"
    )
    print(f"{summary.balance_line()}; tools inferred {summary.tools_inferred}")
    for kind, path in summary.outputs.items():
        print(f"output {path}" + (f" ({kind})" if len(summary.outputs) > 1 else ""))
    print(f"rejects {cfg.rejects_path()}\nsummary {cfg.summary_path()}")
    if summary.converted == 0:
        print("error: nothing converted", file=sys.stderr)
        return 1
    if cfg.strict and summary.num_rejected:
        print(f"error: --strict and {summary.num_rejected} record(s) rejected", file=sys.stderr)
        return 1
    return 0


def _collate_overrides(args: argparse.Namespace) -> list[str]:
    """`collate.KEY=VALUE` overrides from the --seq-length/--chat-template/--mode/--loss-on options."""
    opts = {"seq_length": args.seq_length, "chat_template": args.chat_template, "mode": args.mode}
    opts["loss_on"] = args.loss_on
    return [f"collate.{k}={json.dumps(v)}" for k, v in opts.items() if v is not None]


def _shard_collate(args: argparse.Namespace, tokenizer: Any) -> CollateConfig:
    """The collate options of `shard --tokenizer`: a recipe's collate section (--recipe) or the defaults (the
    tokenizer's own chat template when it has one), then the options and `--collate KEY=VALUE`. With
    `tokenizer` None: only checks the options (before the tokenizer is loaded)."""
    from xlam_hpc.collate import CollateConfig
    from xlam_hpc.collate.pretokenize import default_collate
    from xlam_hpc.config import apply_overrides, config_from_dict, config_to_dict

    if args.recipe:
        from xlam_hpc.recipe import load_recipe

        base = config_to_dict(load_recipe(args.recipe).collate)
    else:
        base = config_to_dict(default_collate(tokenizer) if tokenizer is not None else CollateConfig())
    overrides = [o.removeprefix("collate.") for o in _collate_overrides(args)] + list(args.collate or [])
    return config_from_dict(CollateConfig, apply_overrides(base, overrides), source="shard collate options")


def _cmd_shard(args: argparse.Namespace) -> int:
    from xlam_hpc.shard import ShardConfig, write_shards

    cfg = ShardConfig(
        inputs=args.inputs,
        output_dir=args.output,
        samples_per_shard=args.samples_per_shard,
        overwrite=args.overwrite,
        rejects=args.rejects,
        progress=not args.no_progress,
    )
    tokenizer = args.tokenizer
    if args.recipe and not tokenizer:
        from xlam_hpc.recipe import load_recipe

        tokenizer = load_recipe(args.recipe).tokenizer  # `tokenizer: model` resolved
    collate_opts = (args.chat_template, args.mode, args.loss_on, args.collate)
    if not tokenizer and any(o is not None for o in collate_opts):
        raise ConfigError("--chat-template/--mode/--loss-on/--collate need --tokenizer (or --recipe)")
    if tokenizer:
        from xlam_hpc.collate import load_tokenizer
        from xlam_hpc.collate.pretokenize import write_tokenized_shards

        _shard_collate(args, None)  # option errors before the (slow) tokenizer load
        tok = load_tokenizer(tokenizer)
        summary = write_tokenized_shards(cfg, tokenizer=tokenizer, collate=_shard_collate(args, tok), loaded=tok)
    else:
        summary = write_shards(cfg)
    s = summary.to_dict()
    print(
        f"wrote {s['written']} samples in {s['shards']} shards ({s['bytes']} bytes) to {s['output_dir']}; "
        f"read {s['read']}, rejected {s['rejected_total']} {s['rejected'] or ''}".rstrip()
    )
    for source, n in s["sources"].items():
        print(f"  {source}: {n}")
    if tokenizer:
        from xlam_hpc.shard import load_manifest
        from xlam_hpc.shard.inspect import tokenizer_lines

        for line in tokenizer_lines(load_manifest(summary.output_dir).tokenizer):
            print(line)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from xlam_hpc.shard import inspect_dataset

    report = inspect_dataset(args.directory, samples=args.samples, verify=not args.no_verify)
    if args.json:
        _print_json(report)
    else:
        print(
            f"{report['directory']}: {report['shards']} shards, {report['bytes']} bytes, "
            f"fingerprint {report['fingerprint']}, schema v{report['schema_version']}"
        )
        for name, info in report["sources"].items():
            print(f"  {name}: {info['num_samples']} {info['kind']} samples in {info['num_shards']} shards")
        print(f"integrity: {report['integrity']} (member checksum: {report['member_checksum']})")
        for problem in report["problems"]:
            print(f"  {problem}")
        from xlam_hpc.shard.inspect import tokenizer_lines

        for line in tokenizer_lines(report["tokenizer"]):
            print(line)
        for source, texts in report["samples"].items():
            for text in texts:
                print(f"\n[{source}]\n{text}")
    return 0 if report["integrity"] == "ok" else 1


def _render_recipe(args: argparse.Namespace) -> tuple[Recipe, Any]:
    """The recipe `render` encodes with and its tokenizer: RECIPE.yaml, or a shard directory plus --tokenizer
    (defaults: the manifest's tokenizer and collate options when the shards are pre-tokenized, else the
    tokenizer's own chat template when it has one), then the options and KEY=VALUE overrides."""
    from pathlib import Path

    from xlam_hpc.collate import load_tokenizer
    from xlam_hpc.recipe import load_recipe

    overrides = [*args.overrides, *_collate_overrides(args)]
    if args.tokenizer:
        overrides.append(f"tokenizer={json.dumps(args.tokenizer)}")
    target = Path(args.target)
    if not target.is_dir():
        recipe = load_recipe(target, overrides)
        return recipe, recipe.load_tokenizer()
    from xlam_hpc.shard import load_manifest

    stored = load_manifest(target).tokenizer or {}
    tokenizer = args.tokenizer or stored.get("tokenizer")
    if not tokenizer:
        raise ConfigError(f"{target}: not pre-tokenized; give --tokenizer (a model folder or 'mistral-v3')")
    tok = load_tokenizer(tokenizer)
    if stored.get("collate") and stored.get("tokenizer") == tokenizer:
        collate = dict(stored["collate"])
    else:
        from xlam_hpc.collate.pretokenize import default_collate
        from xlam_hpc.config import config_to_dict

        collate = config_to_dict(default_collate(tok))
    base = {"tokenizer": tokenizer, "data": {"shards": [str(target)]}, "collate": collate}
    recipe = load_recipe(None, overrides, base=base)
    return recipe, tok if recipe.tokenizer == tokenizer else recipe.load_tokenizer()


def _cmd_render(args: argparse.Namespace) -> int:
    import os

    from xlam_hpc.collate import SampleEncoder
    from xlam_hpc.collate.show import encode_records, first_records, format_report

    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    recipe, tokenizer = _render_recipe(args)
    listed = [k for k, w in recipe.data.weights.items() if w > 0]
    used = args.source or (None if recipe.data.weights_default else listed) or None  # a default > 0: every source
    records, kinds = first_records(recipe.data.shards, args.samples, used)
    if not os.path.isdir(args.target):  # a recipe: its task must fit its data, as the loader checks
        from xlam_hpc.stream.loader import check_source_kinds

        check_source_kinds(kinds, recipe.task)
    encoder = SampleEncoder(tokenizer, recipe.collate)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    print(format_report(encode_records(encoder, records), tokenizer, color=color))
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.stream.probe import run_probe

    recipe = load_recipe(args.recipe, args.overrides)
    state = run_probe(
        recipe,
        steps=args.steps,
        rank=args.rank,
        world_size=args.world_size,
        trace=args.trace,
        resume=args.resume,
        state_out=args.state_out,
        allow_fingerprint_mismatch=args.force,
    )
    print(json.dumps(state))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.train.loop import run_training

    return run_training(load_recipe(args.recipe, args.overrides))


def _cmd_export(args: argparse.Namespace) -> int:
    from xlam_hpc.train.export import export_run, parse_size

    out = export_run(
        args.run_dir,
        args.output,
        checkpoint=args.checkpoint,
        merge_lora=args.merge_lora,
        max_bytes=parse_size(args.max_shard_size),
        dtype=args.dtype,
    )
    what = "final" if args.checkpoint is None else f"checkpoint-{args.checkpoint}"
    print(f"exported {args.run_dir} ({what}) to {out}")
    return 0


def _recipe_for_launch(args: argparse.Namespace):
    from xlam_hpc.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.cluster:
        recipe.launch.cluster = args.cluster
    return recipe


def _cmd_submit(args: argparse.Namespace) -> int:
    from xlam_hpc.launch.submit import dry_run, submit_run

    recipe = _recipe_for_launch(args)
    if args.dry_run:
        print(dry_run(recipe))
        return 0
    submit_run(recipe, cluster=recipe.launch.cluster, wait=args.wait, log=lambda m: print(m, file=sys.stderr))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xlam_hpc.launch.status import wait_slurm
    from xlam_hpc.launch.sweep import expand_grid, parse_grid, preflight_sweep, submit_sweep, summarize

    recipe = _recipe_for_launch(args)
    sweep_dir = Path(args.sweep_dir or recipe.output_dir).resolve()
    overrides = [*args.overrides, f"launch.cluster={recipe.launch.cluster}"]
    tasks = expand_grid(args.recipe, overrides, parse_grid(args.grid), sweep_dir, seeds=args.seeds)
    print(
        f"{len(tasks)} tasks: "
        + "; ".join(
            f"task-{i:04d} " + " ".join(f"{k}={v}" for k, v in a.items()) + f" seed={r.seed}"
            for i, (a, r) in enumerate(tasks)
        ),
        file=sys.stderr,
    )
    if args.dry_run:
        preflight_sweep(tasks)
        print(f"preflight ok: {len(tasks)} tasks, nothing submitted", file=sys.stderr)
        return 0
    jobs = submit_sweep(
        tasks,
        sweep_dir,
        cluster=recipe.launch.cluster,
        max_parallel=args.max_parallel,
        log=lambda m: print(m, file=sys.stderr),
    )
    if args.wait or recipe.launch.cluster == "local":
        if recipe.launch.cluster == "local":
            for job in jobs:
                job.wait()
        else:
            wait_slurm([str(j.job_id) for j in jobs], sweep_dir, log=lambda m: print(m, file=sys.stderr))
        _, md = summarize(sweep_dir)
        print(md)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from xlam_hpc.launch.status import status_report
    from xlam_hpc.launch.sweep import summarize

    rows = status_report(args.directory)
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        task = f"task {r['task']:>3} " if "task" in r else ""
        jobs = f" over {r['jobs']} jobs" if r.get("jobs", 0) > 1 else ""  # resubmissions: the run's totals
        print(
            f"{task}{r['state']:<12} job {r['job_id'] or '-'} restarts {r['restarts']}{jobs} {r['budget_line']} "
            f"checkpoint {r['last_checkpoint_step']} loss {r['final_loss']}  {r['output_dir']}  logs {r['logs']}"
        )
        if r.get("cause"):
            c = r["cause"]
            print(f"    last failure: rank {c['rank']}: {c['line']}  (log {c['log']})")
    from pathlib import Path

    if (Path(args.directory) / "sweep.json").exists():
        summarize(args.directory)
        print(f"summary: {Path(args.directory) / 'summary.md'}")
    return 0


def _cmd_requeue_decision(args: argparse.Namespace) -> int:
    from xlam_hpc.launch.requeue import decide

    d = decide(
        args.output_dir,
        args.exit_code,
        max_timeouts=args.max_timeouts,
        max_preemptions=args.max_preemptions,
        max_failures=args.max_failures,
    )
    print(d.line())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from xlam_hpc.demo import run_demo

    if args.toolcall:
        from xlam_hpc.demo import run_toolcall_demo

        run_toolcall_demo(args.output_dir or "runs/toolcall-demo", steps=args.steps, ranks=args.ranks, seed=args.seed)
        return 0
    run_demo(args.output_dir or "runs/demo", steps=args.steps or 30, ranks=args.ranks)
    return 0


def _cmd_formats(args: argparse.Namespace) -> int:
    from xlam_hpc.convert import CONVERTERS

    for name, cls in CONVERTERS.items():
        print(f"{name:24s} {cls.description}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from xlam_hpc.schema import json_schema

    _print_json(json_schema(args.kind))
    return 0


def _add_collate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq-length", type=int, help="collate.seq_length (default 4096)")
    p.add_argument("--chat-template", help="collate.chat_template: tokenizer | builtin | FILE.jinja")
    p.add_argument("--mode", choices=["trajectory", "prompt_answer"], help="collate.mode")
    p.add_argument("--loss-on", choices=["all", "last"], help="collate.loss_on")


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*=")


class _Parser(argparse.ArgumentParser):
    """Dotted `KEY=VALUE` overrides anywhere on the line (`stream rec.yaml --steps 3 key=val`): argparse fills the
    `overrides` positional from the words right after the recipe only, so the later ones are collected here,
    in order (a later override of the same key wins). Other stray words stay an error."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extra = self.parse_known_args(args, namespace)
        late = [word for word in extra if _OVERRIDE.match(word)]
        if late and isinstance(getattr(ns, "overrides", None), list):
            ns.overrides = [*ns.overrides, *late]
            extra = [word for word in extra if not _OVERRIDE.match(word)]
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return ns


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xlam-hpc", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"xlam-hpc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="raw agent datasets → validated unified JSONL")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, or directories (read recursively, see --glob)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.jsonl")
    p.add_argument("--format", default="auto", help="input format (see `xlam-hpc formats`), default: auto-detect")
    p.add_argument("--source", help="override the source name of every record")
    p.add_argument("--min-score", type=float, help="drop records with a score below this")
    p.add_argument("--dedup", action="store_true", help="drop exact duplicates (normalized content hash)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any record is rejected")
    p.add_argument("--emit", choices=["unified", "actionstudio"], default="unified")
    p.add_argument("--max-record-bytes", type=int, default=32 * 1024 * 1024, help="reject larger records")
    p.add_argument("--rejects", help="reject file (default OUT.rejects.jsonl)")
    p.add_argument("--summary", help="summary JSON (default OUT.summary.json)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--glob", help="files of a directory INPUT to read, e.g. '*_DFS_*.json' (default *.json, *.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.jsonl (refused otherwise)")
    p.add_argument(
        "--messages-key",
        metavar="KEY",
        help="top-level key holding OpenAI-style {role, content} messages (implies --format openai); "
        "default: found per record (messages, conversations, traj, dialog, ...)",
    )
    p.set_defaults(handler=_cmd_convert)

    p = sub.add_parser("shard", help="unified JSONL → WebDataset tar shards + manifest")
    p.add_argument("inputs", nargs="+", metavar="IN.jsonl")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in DIR")
    p.add_argument("--tokenizer", help="also store token ids for this tokenizer (path or 'mistral-v3')")
    p.add_argument("--recipe", metavar="RECIPE.yaml", help="store token ids for this recipe's tokenizer and collate")
    _add_collate_options(p)
    p.add_argument(
        "--collate",
        action="append",
        metavar="KEY=VALUE",
        help="with --tokenizer: any collate option, e.g. --collate template_kwargs.date_string='26 Jul 2024'",
    )
    p.add_argument("--rejects", help="reject file (default DIR/rejects.jsonl)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_shard)

    p = sub.add_parser("inspect", help="counts, sha256 integrity check and sample renderings of a shard DIR")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--samples", type=int, default=2, help="records to render per source")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_inspect)

    p = sub.add_parser(
        "render", help="show samples exactly as tokenized with trained tokens highlighted (check a chat template)"
    )
    p.add_argument("target", metavar="RECIPE.yaml|SHARD_DIR")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides, e.g. collate.mode=...")
    p.add_argument("--samples", type=int, default=3, help="records to render per source (default 3)")
    p.add_argument("--source", action="append", help="only this source (repeatable)")
    p.add_argument("--tokenizer", help="a model folder or 'mistral-v3' (SHARD_DIR: required unless pre-tokenized)")
    _add_collate_options(p)
    p.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="trained tokens in colour (auto: when stdout is a terminal) or between ⟦ ⟧ markers",
    )
    p.set_defaults(handler=_cmd_render)

    p = sub.add_parser("stream", help="run the loader alone: sample-id trace + final state (resume probe)")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--trace", help="append one JSON line per batch here")
    p.add_argument("--resume", metavar="STATE.json", help="continue from a saved loader state")
    p.add_argument("--state-out", help="final state file (default TRACE.state.json)")
    p.add_argument("--force", action="store_true", help="accept a state made with another data stream")
    p.set_defaults(handler=_cmd_stream)

    p = sub.add_parser("train", help="train (SFT/DPO) as one rank; launch ranks with torchrun, srun or `submit`")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides, e.g. train.lr=1e-5")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("export", help="a run's final model or checkpoint-N as a plain transformers folder")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training output_dir")
    p.add_argument("--checkpoint", type=int, metavar="N", help="export checkpoint-N instead of final")
    p.add_argument("--merge-lora", action="store_true", help="LoRA runs: merge the adapter into the base model")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="merged/consolidated weights (default fp32)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="a new or empty directory")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("submit", help="run a recipe with submitit: local (default) or Slurm, with requeue")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--cluster", choices=["local", "slurm"], help="default: the recipe's launch.cluster (local)")
    p.add_argument("--wait", action="store_true", help="Slurm: wait until the job ends (local runs always wait)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script, submit nothing")
    p.set_defaults(handler=_cmd_submit)

    p = sub.add_parser("sweep", help="grid sweep as one Slurm array (or local jobs)")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument(
        "--grid",
        nargs="+",
        action="extend",
        required=True,
        metavar="KEY=V1,V2",
        help="e.g. lr=1e-5,2e-5 lora.r=8,16; repeated --grid flags combine (the cartesian product of all keys)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="K",
        help="K seed replicates of every grid point (seed, seed+1, ...); default 1: every task has the recipe's seed",
    )
    p.add_argument("--max-parallel", type=int, help="at most K array tasks at once")
    p.add_argument("--sweep-dir", help="default: the recipe's output_dir")
    p.add_argument("--cluster", choices=["local", "slurm"])
    p.add_argument("--wait", action="store_true", help="wait and print the summary table")
    p.add_argument("--dry-run", action="store_true", help="list the tasks, submit nothing")
    p.set_defaults(handler=_cmd_sweep)

    p = sub.add_parser("status", help="state, restarts, last checkpoint and logs of a run or sweep directory")
    p.add_argument("directory", nargs="?", default=".", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("requeue-decision", help="(used by batch scripts) classify an exit and apply the budgets")
    p.add_argument("output_dir", metavar="OUTPUT_DIR")
    p.add_argument("--exit-code", type=int, required=True)
    p.add_argument("--max-timeouts", type=int, default=10)
    p.add_argument("--max-preemptions", type=int, default=10)
    p.add_argument("--max-failures", type=int, default=2)
    p.set_defaults(handler=_cmd_requeue_decision)

    p = sub.add_parser("demo", help="convert → shard → inspect → train a tiny model on the bundled samples")
    p.add_argument("--output-dir", default=None, help="default runs/demo (runs/toolcall-demo with --toolcall)")
    p.add_argument("--steps", type=int, default=None, help="default 30 (the recipe's with --toolcall)")
    p.add_argument("--ranks", type=int, default=1, help="local ranks (processes)")
    p.add_argument(
        "--toolcall",
        action="store_true",
        help="synthetic tool-calling data, held-out eval before and after training, report (~10 min on 2 CPU "
        "cores; docs/benchmarks.md: toolcall-demo)",
    )
    p.add_argument("--seed", type=int, default=0, help="--toolcall: seed of the synthetic data")
    p.set_defaults(handler=_cmd_demo)

    # each of these packages owns its subcommand (parser + handler): cli.py stays a table of contents
    from xlam_hpc.evaluate.cli import add_eval_parser
    from xlam_hpc.report.cli import add_report_parser
    from xlam_hpc.synth.cli import add_synth_parser

    add_synth_parser(sub)
    add_eval_parser(sub)
    add_report_parser(sub)

    p = sub.add_parser("formats", help="list the input formats of `convert`")
    p.set_defaults(handler=_cmd_formats)

    p = sub.add_parser("schema", help="print the JSON Schema of the unified format")
    p.add_argument("kind", choices=["trajectory", "preference"], nargs="?", default="trajectory")
    p.set_defaults(handler=_cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a reader that went away (`| head`) is seen here, not at interpreter exit
        return code
    except XlamError as exc:
        print(f"xlam-hpc {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"xlam-hpc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout closed the pipe (`xlam-hpc inspect DIR | head`): stop quietly, as `cat` does.
        # Python's recipe (docs: signal, "Note on SIGPIPE"): point stdout at devnull so the final flush at
        # exit cannot raise again, and exit 128 + SIGPIPE.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141

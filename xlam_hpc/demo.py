"""`xlam-hpc demo` (what `make demo` runs): the main job end to end on the bundled samples.

convert (auto-detected formats) → shard → inspect → SFT of a tiny Mistral on the embedded default
launcher (submitit's local executor) → a few held-out items evaluated → report, then prints where the
checkpoint, trace, logs, evaluation and report are. Needs no network, no GPU and no Slurm; the container
smoke test runs it inside the image too.

`xlam-hpc demo --toolcall`: synthetic function-calling data (xlam_hpc.synth) → shard → the untrained model
evaluated on held-out requests (phrasings and values never trained on) → SFT → the trained model evaluated on
the same items → report, and a before/after table. ~10 minutes on 2 CPU cores; what it learns at that budget
(call syntax and tool choice, not yet copying argument values) is in docs/benchmarks.md, toolcall-demo.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from xlam_hpc.config import save_yaml

__all__ = ["demo_recipe", "run_demo", "run_toolcall_demo", "toolcall_recipe"]

SFT_SAMPLES = [
    "glaive_toolcall_sharegpt.json",
    "hermes_fc_v1.json",
    "fireact_hotpotqa_react.jsonl",
    "llamafactory_reason_tool_use.jsonl",
    "toolbench_dfs_answer.json",
    "xlam_fc.jsonl",
]


def samples_dir() -> Path:
    return Path(str(resources.files("xlam_hpc").joinpath("assets", "samples")))


def demo_recipe(out: Path, *, steps: int, ranks: int) -> dict[str, Any]:
    """The demo's recipe (also a starting point: configs/recipes/demo-sft.yaml is the same)."""
    return {
        "task": "sft",
        "seed": 0,
        "output_dir": str(out / "run"),
        "tokenizer": "mistral-v3",
        "data": {"shards": [str(out / "shards")], "global_batch_size": 2 * ranks},
        "collate": {"seq_length": 1024, "chat_template": "builtin", "packing": True},
        "model": {"name_or_path": "tiny-mistral", "dropout": 0.1},
        "train": {
            "max_steps": steps,
            "save_interval": max(1, steps // 3),
            "lr": 1.0e-3,
            "warmup_steps": 2,
            "trace_samples": True,
            "deepspeed": "zero2",
        },
        "launch": {"cluster": "local", "tasks_per_node": ranks, "cpus_per_task": 1, "time_min": 60},
    }


def run_demo(output_dir: str | Path, *, steps: int = 30, ranks: int = 1, log: Any = print) -> dict[str, str]:
    from xlam_hpc.convert import ConvertConfig, convert_files
    from xlam_hpc.evaluate.runner import EvalConfig, run_eval
    from xlam_hpc.launch.submit import submit_run
    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.report import write_report
    from xlam_hpc.shard import ShardConfig, inspect_dataset, write_shards

    out = Path(output_dir).resolve()
    (out / "data").mkdir(parents=True, exist_ok=True)
    inputs = [str(samples_dir() / name) for name in SFT_SAMPLES]
    log(f"== convert {len(inputs)} bundled sample files (formats auto-detected)")
    summary = convert_files(
        # the demo re-makes its own data each run
        ConvertConfig(inputs=inputs, output=str(out / "data" / "sft.jsonl"), progress=False, overwrite=True),
        log=lambda m: log("   " + m),
    )
    s = summary.to_dict()
    log(f"   read {s['read']}, converted {s['converted']}, rejected {s['rejected']} {s['rejected_by_reason']}")
    log("== shard")
    shards = write_shards(
        ShardConfig(
            inputs=[str(out / "data" / "sft.jsonl")],
            output_dir=str(out / "shards"),
            samples_per_shard=64,
            overwrite=True,
            progress=False,
        )
    )
    log(f"   {shards.written} samples in {shards.shards} shards: {shards.sources}")
    log("== inspect")
    report = inspect_dataset(out / "shards", samples=1)
    log(f"   integrity {report['integrity']}, fingerprint {report['fingerprint']}")
    first = next(iter(report["samples"].values()))[0]
    log("   " + first.replace("\n", "\n   "))
    log(f"== train tiny-mistral for {steps} steps on {ranks} local rank(s) (submitit local executor, DeepSpeed ZeRO-2)")
    recipe_path = out / "recipe.yaml"
    save_yaml(demo_recipe(out, steps=steps, ranks=ranks), recipe_path)
    if (out / "run").exists():  # the demo re-makes its data each time: its run starts over too
        log(f"   removing the previous demo run {out / 'run'}")
        shutil.rmtree(out / "run")
    recipe = load_recipe(recipe_path)
    jobs = submit_run(recipe, cluster="local", wait=True, log=lambda m: log("   " + m))
    run = Path(recipe.output_dir)
    where = {
        "checkpoint": str(run / (run / "latest").read_text().strip()),
        "final_model": str(run / "final"),
        "trace": str(run / "trace"),
        "logs": str(jobs[-1].paths.folder),
        "tensorboard": str(run / "tensorboard"),
        "metrics": json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {},
    }
    log("== eval: the first 8 items of the converted data (greedy, 16 new tokens: the pipeline, not a score)")
    results = run_eval(
        EvalConfig(model=str(run), data=[str(out / "data" / "sft.jsonl")], limit=8, max_new_tokens=16, progress=False),
        log=lambda m: log("   " + m),
    )
    where["eval"] = str(run / "eval" / "results.json")
    log("== report")
    where["report"] = str(write_report(run))
    m = results["metrics"]["overall"]
    exact = _pct(m.get("whole_call_exact_match"))
    log(f"   {results['n']} items: parse rate {_pct(m.get('parse_rate'))}, whole-call exact {exact}")
    log("== done")
    for key, value in where.items():
        log(f"   {key:12s} {value}")
    return where


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# -- the tool-calling demo ---------------------------------------------------------------------------------------
TOOLCALL_MAX_NEW_TOKENS = 112
"""Enough for the longest held-out answer (two send_message calls, ~100 tokens with the builtin template)."""


def toolcall_recipe(out: Path, *, steps: int | None = None, ranks: int = 1) -> dict[str, Any]:
    """The recipe of `demo --toolcall` (configs/recipes/toolcall-demo.yaml is the same, with repo paths).

    Sized by experiment on 2 CPU cores (docs/benchmarks.md): the mistral-v3 tokenizer (the smallest shipped
    vocabulary; only trained tokens reach the LM head), a 4-layer 128-wide Mistral with tied embeddings (the
    output embedding of a token is its input embedding, so attending to a token in the request and writing it
    is one map to learn), packed 768-token rows (the longest record is ~600 tokens; a shorter row spends less
    on attention masked off between packed records), 8 records per step (more steps in the budget: the model's
    progress is counted in steps more than in records), 750 steps: ~8 minutes of training."""
    return {
        "task": "sft",
        "seed": 0,
        "output_dir": str(out / "run"),
        "tokenizer": "mistral-v3",
        "data": {"shards": [str(out / "shards")], "global_batch_size": 8, "num_workers": 1},
        "collate": {
            "seq_length": 768,
            "mode": "trajectory",
            "loss_on": "all",
            "packing": True,
            "chat_template": "builtin",
        },
        "model": {
            "name_or_path": "tiny-mistral",
            "dropout": 0.0,
            "config_overrides": {
                "hidden_size": 128,
                "intermediate_size": 256,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "tie_word_embeddings": True,
            },
        },
        "train": {
            "max_steps": steps or 750,
            "lr": 3.0e-3,
            "warmup_steps": 50,
            "schedule": "cosine",
            "deepspeed": "zero2",
            "save_interval": 250,
            "keep_last": 1,
        },
        "launch": {"cluster": "local", "tasks_per_node": ranks, "cpus_per_task": max(1, 2 // ranks)},
    }


def _by_kind(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Metrics per record kind of the synthetic data (single, parallel, multi_turn, no_call): item ids are
    `toolcall-<split>-<index>-<kind>#<turn>`."""
    from xlam_hpc.evaluate.score import aggregate

    groups: dict[str, list[dict[str, Any]]] = {}
    with open(results["items_file"], encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            groups.setdefault(row["id"].split("#")[0].rsplit("-", 1)[-1], []).append(row)
    return {k: aggregate(v)["overall"] for k, v in sorted(groups.items())}


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Lines of a plain-text table: overall metrics, then whole-call exact match (call items) or irrelevance
    accuracy (items where the right answer calls nothing) per eval category and per record kind."""
    rows: list[tuple[str, float | None, float | None]] = []
    b, a = before["metrics"]["overall"], after["metrics"]["overall"]
    for label, key in (
        ("parse rate", "parse_rate"),
        ("tool name accuracy", "tool_name_accuracy"),
        ("argument exact match", "argument_exact_match"),
        ("whole-call exact match", "whole_call_exact_match"),
        ("irrelevance accuracy", "irrelevance_accuracy"),
    ):
        rows.append((label, b.get(key), a.get(key)))
    for group, bm, am in (
        ("category", before["metrics"]["by_category"], after["metrics"]["by_category"]),
        ("kind", _by_kind(before), _by_kind(after)),
    ):
        for name in sorted(set(bm) | set(am)):
            bb, aa = bm.get(name, {}), am.get(name, {})
            calls = (aa.get("n") or 0) > (aa.get("n_irrelevance") or 0)
            key, what = ("whole_call_exact_match", "exact") if calls else ("irrelevance_accuracy", "no call")
            rows.append((f"  {group} {name} ({what})", bb.get(key), aa.get(key)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}s}  {'before':>8s}  {'after':>8s}"]
    lines += [f"{label:{width}s}  {_pct(x):>8s}  {_pct(y):>8s}" for label, x, y in rows]
    return lines


def run_toolcall_demo(
    output_dir: str | Path,
    *,
    steps: int | None = None,
    ranks: int = 1,
    seed: int = 0,
    train: int = 8000,
    heldout: int = 100,
    log: Any = print,
) -> dict[str, Any]:
    """synth → shard → eval untrained → train → eval trained → report. Returns the paths, both results and
    the training wall time (`train_s`)."""
    from xlam_hpc.evaluate.runner import EvalConfig, run_eval
    from xlam_hpc.launch.submit import submit_run
    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.report import write_report
    from xlam_hpc.shard import ShardConfig, write_shards
    from xlam_hpc.synth.toolcall import write_toolcall_dataset

    out = Path(output_dir).resolve()
    sub = lambda m: log("   " + m)  # noqa: E731
    log(f"== synth toolcall (seed {seed}): {train} training and {heldout} held-out records")
    data = write_toolcall_dataset(out / "data", seed=seed, train=train, heldout=heldout)
    for split in ("train", "heldout"):
        sub(f"{data[split]}: " + ", ".join(f"{k} {v}" for k, v in data[f"{split}_kinds"].items()))
    log("== shard the training records")
    shards = write_shards(
        ShardConfig(
            inputs=[data["train"]],
            output_dir=str(out / "shards"),
            samples_per_shard=1000,
            overwrite=True,
            progress=False,
        )
    )
    sub(f"{shards.written} samples in {shards.shards} shards")
    recipe_path = out / "recipe.yaml"
    save_yaml(toolcall_recipe(out, steps=steps, ranks=ranks), recipe_path)
    run = out / "run"
    if run.exists():  # the data is made anew: so is the run
        sub(f"removing the previous run {run}")
        shutil.rmtree(run)
    recipe = load_recipe(recipe_path)

    def evaluate(untrained: bool) -> dict[str, Any]:
        cfg = EvalConfig(
            model=str(recipe_path if untrained else run),
            untrained=untrained,
            data=[data["heldout"]],
            output=str(run / "eval" / ("untrained.json" if untrained else "results.json")),
            max_new_tokens=TOOLCALL_MAX_NEW_TOKENS,
            batch_size=16,
            progress=False,
        )
        return run_eval(cfg, log=sub)

    log("== eval the untrained model on the held-out records (before)")
    before = evaluate(untrained=True)
    log(f"== train for {recipe.train.max_steps} steps on {ranks} local rank(s) (DeepSpeed ZeRO-2, CPU)")
    t0 = time.monotonic()
    jobs = submit_run(recipe, cluster="local", wait=True, log=sub)
    train_s = time.monotonic() - t0
    log("== eval the trained model on the same items (after)")
    after = evaluate(untrained=False)
    log("== report")
    report = write_report(run)
    log(f"== before/after on {after['n']} held-out items (request phrasings and argument values never trained on)")
    for line in before_after_table(before, after):
        sub(line)
    where = {
        "data": str(out / "data"),
        "final_model": str(run / "final"),
        "eval_before": str(run / "eval" / "untrained.json"),
        "eval_after": str(run / "eval" / "results.json"),
        "report": str(report),
        "logs": str(jobs[-1].paths.folder),
    }
    log(f"== done (training {train_s:.0f} s)")
    for key, value in where.items():
        log(f"   {key:12s} {value}")
    return {**where, "before": before, "after": after, "train_s": train_s}

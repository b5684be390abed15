"""`xlam-hpc demo` (what `make demo` runs): the main job end to end on the bundled samples.

convert (auto-detected formats) → shard → inspect → SFT of a tiny Mistral on the embedded default
launcher (submitit's local executor), then prints where the checkpoint, trace and logs are. Needs no
network, no GPU and no Slurm; the container smoke test runs it inside the image too.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from xlam_hpc.config import save_yaml

__all__ = ["demo_recipe", "run_demo"]

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
    from xlam_hpc.launch.submit import submit_run
    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.shard import ShardConfig, inspect_dataset, write_shards

    out = Path(output_dir).resolve()
    (out / "data").mkdir(parents=True, exist_ok=True)
    inputs = [str(samples_dir() / name) for name in SFT_SAMPLES]
    log(f"== convert {len(inputs)} bundled sample files (formats auto-detected)")
    summary = convert_files(
        ConvertConfig(inputs=inputs, output=str(out / "data" / "sft.jsonl"), progress=False),
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
    rank0 = sorted(Path(where["logs"]).glob("*_0_log.err"))
    if rank0:
        lines = [x for x in rank0[-1].read_text(errors="replace").splitlines() if "xlam_hpc." in x]
        log("   training log (rank 0, last lines):")
        for line in lines[-4:]:
            log("     " + line)
    log("== done")
    for key, value in where.items():
        log(f"   {key:12s} {value}")
    return where

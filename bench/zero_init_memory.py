"""Peak host memory per rank, ZeRO-2 vs ZeRO-3, through the real trainer: prints one JSON object.

  python bench/zero_init_memory.py [--hidden 768] [--layers 20] [--intermediate 3072] [--ranks 4]
                                   [--modes full lora] [--seq-length 128] [--steps 1]

For each mode (full fine-tuning, LoRA) two runs of the same recipe (torchrun, --ranks ranks, gloo, CPU,
fp32), differing only in the ZeRO stage: the tiny-mistral preset widened by config_overrides (~230M
parameters by default), 4 samples per step. Both DeepSpeed configs are the shipped ones with their absolute
sizes (buckets, live parameters, reuse distance; tuned for ~7B) scaled by params/7B, see scaled_deepspeed.
The trainer records each rank's peak RSS (getrusage ru_maxrss) in output_dir/memory.json: after the model
is built ("model"), after the DeepSpeed engine ("setup"), after the last step ("train"), after writing
output_dir/final ("export"). Under ZeRO-3 the model is built inside DeepSpeed's partitioned init, so no rank
holds all of its weights; under ZeRO-2 every rank builds the whole model. Ratio = ZeRO-3 / ZeRO-2 of the
largest rank's peak at each stage (lower is better). glibc's mmap threshold is fixed for both (see compare).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xlam_hpc.convert import ConvertConfig, convert_files  # noqa: E402
from xlam_hpc.shard import ShardConfig, write_shards  # noqa: E402
from xlam_hpc.testing.runs import torchrun_train  # noqa: E402

DATA = ROOT / "tests" / "data"


def build_shards(work: Path) -> Path:
    converted = work / "sft.jsonl"
    inputs = [DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"]
    config = ConvertConfig(inputs=[str(p) for p in inputs], output=str(converted), progress=False)
    convert_files(config, log=lambda m: None)
    out = work / "sft"
    write_shards(ShardConfig(inputs=[str(converted)], output_dir=str(out), samples_per_shard=8, progress=False))
    return out


def scaled_deepspeed(work: Path, stage: str, params: int) -> Path:
    """The shipped zero2/zero3 config with DeepSpeed's absolute sizes (buckets, live parameters, reuse distance:
    tuned for ~7B) scaled by params/7B, as the same fraction of this model: unscaled, ZeRO-3 keeps a 100M
    model's every weight gathered during the step (stage3_max_live_parameters 1e9) and its 50M-element
    buckets cost more than the partitioning saves."""
    from importlib import resources

    config = json.loads(resources.files("xlam_hpc.train").joinpath(f"deepspeed/{stage}.json").read_text())
    scale = params / 7e9
    zero = config["zero_optimization"]
    for key in ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size"):
        if key in zero:
            zero[key] = max(1, int(zero[key] * scale) // 1024) * 1024  # DeepSpeed wants aligned buckets
    if stage == "zero3":
        zero["stage3_max_live_parameters"] = int(1e9 * scale)
        zero["stage3_max_reuse_distance"] = int(1e9 * scale)
        zero["stage3_param_persistence_threshold"] = int(1e5 * scale)
    path = work / f"{stage}-scaled.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def recipe(shards: Path, deepspeed: Path, steps: int, model: dict[str, int], lora: bool, seq: int) -> dict[str, Any]:
    train: dict[str, Any] = {"deepspeed": str(deepspeed), "max_steps": steps, "save_interval": 1000, "lr": 1e-4}
    if lora:
        train["lora"] = {"r": 8, "alpha": 16}
    return {
        "task": "sft",
        "seed": 7,
        "data": {"shards": [str(shards)], "global_batch_size": 4},
        "collate": {"seq_length": seq, "chat_template": "builtin"},
        "model": {"name_or_path": "tiny-mistral", "config_overrides": model},
        "train": {**train, "precision": "fp32"},
    }


def num_params(model: dict[str, int], vocab: int = 32768) -> int:
    h, i, n, heads, kv = (model[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "heads", "kv"))
    attn = 2 * h * h + 2 * h * (h // heads) * kv
    return n * (attn + 3 * h * i + 2 * h) + 2 * vocab * h + h


def measure(work: Path, name: str, spec: dict[str, Any], env: dict[str, str], ranks: int) -> dict[str, list[float]]:
    import yaml

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out, log = work / f"run-{name}", work / f"{name}.log"
    proc = torchrun_train(path, out, log=log, env=env, nproc=ranks)
    if proc.wait(timeout=1800) != 0:
        raise RuntimeError(f"{name} run failed:\n{log.read_text()[-4000:]}")
    memory: dict[str, list[float]] = json.loads((out / "memory.json").read_text())["peak_rss_mib"]
    return memory


def compare(
    work: Path, steps: int, model: dict[str, int], modes: list[str], ranks: int = 2, seq_length: int = 256
) -> dict[str, Any]:
    """{mode: {peak_rss_mib: {zero2, zero3}, ratio_zero3_over_zero2: {stage: ratio}}} for mode full / lora."""
    shards = build_shards(work)
    overrides = {k: v for k, v in model.items() if k not in ("heads", "kv")}
    overrides |= {"num_attention_heads": model["heads"], "num_key_value_heads": model["kv"]}
    # glibc's dynamic mmap threshold keeps freed weight-sized blocks in the heap: RSS would then show the
    # allocator's fragmentation instead of what is alive; a fixed threshold returns them (both stages alike)
    env = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    result: dict[str, Any] = {"params": num_params(model), "ranks": ranks, "precision": "fp32", "env": env}
    configs = {stage: scaled_deepspeed(work, stage, result["params"]) for stage in ("zero2", "zero3")}
    result["deepspeed"] = {stage: json.loads(path.read_text())["zero_optimization"] for stage, path in configs.items()}
    for mode in modes:
        peaks = {
            stage: measure(
                work, f"{mode}-{stage}", recipe(shards, path, steps, overrides, mode == "lora", seq_length), env, ranks
            )
            for stage, path in configs.items()
        }
        z2, z3 = peaks["zero2"], peaks["zero3"]
        ratio = {k: round(max(z3[k]) / max(z2[k]), 3) for k in z2}
        result[mode] = {"peak_rss_mib": peaks, "ratio_zero3_over_zero2": ratio}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--modes", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    args = parser.parse_args()
    model = {
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "heads": 16,
        "kv": 8,
    }
    with tempfile.TemporaryDirectory(prefix="zero-init-") as tmp:
        result = compare(Path(tmp), args.steps, model, args.modes, args.ranks, args.seq_length)
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

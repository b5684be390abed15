"""Training benchmark on one GPU: our trainer vs a plain PyTorch loop on the same batches; prints one JSON object.

  python bench/train_gpu.py [--runs ours,ours_2x,ours_compile,plain,plain_compile] [--steps 10] [--warmup-steps 3]
  python bench/train_gpu.py --cpu-dry-run     # tiny shapes on CPU: every code path except CUDA

Model: the `mistral-1b` preset (16 layers, hidden 2048, vocab 32768 of the Mistral v3 tokenizer), bf16
(`precision: auto`), `--attn` (default auto: the installed varlen flash kernel, else flex_attention, which
keeps packed samples apart without a dense mask), seq_length 4096, packing, built-in chat template, ZeRO-2.
Data: every SFT record the converters make from tests/data, copied with new ids up to --records, sharded.

Runs (each in its own child process, so CUDA memory peaks and compile caches do not mix):
- attention: bench/attention_gpu.py: per attention implementation, packed-sample isolation (logits inside a
  packed micro-batch vs alone) and packed vs unpacked plain-causal tokens/s (goal >= 0.95x);
- ours: the real trainer, in-process in the child (`xlam_hpc.train.loop.run_training(load_recipe(...))`,
  what `xlam-hpc train` runs), train.compile false, train.fused_kernels false;
- ours_2x: the same with twice the samples per step (same train.micro_batch_tokens): with micro-batching
  the peak memory should stay flat while the step holds twice the tokens;
- ours_compile: train.compile true (what `xlam_hpc.train.kernels` applies: each decoder layer compiled);
- ours_liger: train.fused_kernels true (only when liger_kernel is importable; never with compile);
- plain: what a user writes without us, on the same packed batches (our loader's rows, position_ids, labels,
  taken before the timed loop): the same initial model in bf16 on the GPU, `model(..., labels=labels).loss`,
  backward, clip_grad_norm_(1.0), `torch.optim.AdamW(fused=True)`, LambdaLR; no DeepSpeed. Ours keeps fp32
  master weights and fp32 Adam states (DeepSpeed's bf16 optimizer): more optimizer work and memory, so
  this baseline is the faster one to beat;
- plain_compile: the plain loop on `torch.compile(model)` (the whole model, as a user would).

Tokens/s = real (non-pad) tokens of steps warmup+1..N / their wall time. Ours: arrival times of the per-step
trace lines (trace/rank0.jsonl, flushed once per optimizer step, polled every 5 ms by this process), so
start-up, compilation in the first steps, the final save and export are excluded; plain: torch.cuda.synchronize()
then time.monotonic() after each optimizer step. MFU = 6 * N * tokens/s / peak bf16 dense FLOP/s of the GPU
(N: all parameters, embeddings included; H100/H200 989 TFLOP/s, A100 312; --peak-tflops for others); the
attention FLOPs are left out, as in the usual 6N estimate. Peak memory: torch.cuda.max_memory_allocated() of the
child process over the whole run (for ours, the final save and export allocate little on the GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SEED = 7
ALL_RUNS = ("attention", "ours", "ours_2x", "ours_compile", "ours_liger", "plain", "plain_compile")
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
"""bf16 dense tensor-core peak (SXM) by GPU name."""
GIB = 1024**3


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key in name.upper():
            return value
    return None


# -- data and recipe -------------------------------------------------------------------------------------------
def build_shards(work: Path, records: int) -> Path:
    from bench.corpus import sft_corpus
    from xlam_hpc.shard import ShardConfig, write_shards

    corpus = sft_corpus(work, records)
    write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(work / "sft"), samples_per_shard=256, progress=False))
    return work / "sft"


def write_recipe(path: Path, shards: Path, args: argparse.Namespace, samples: int, **train: Any) -> Path:
    import yaml

    model: dict[str, Any] = {"name_or_path": args.model, "dropout": 0.0, "attn_implementation": args.attn}
    if args.model_overrides:
        model["config_overrides"] = json.loads(args.model_overrides)
    recipe = {
        "task": "sft",
        "seed": SEED,
        "data": {"shards": [str(shards)], "global_batch_size": samples},
        "collate": {"seq_length": args.seq_length, "chat_template": "builtin", "packing": True},
        "model": model,
        "train": {
            "max_steps": args.steps,
            "save_interval": args.steps,
            "lr": 1.0e-4,
            "warmup_steps": 2,
            "schedule": "cosine",
            "deepspeed": "zero2",
            "trace_samples": True,
            "log_interval": 1,
            "micro_batch_tokens": args.micro_batch_tokens,
            "compile": False,
            "fused_kernels": False,
            **train,
        },
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


# -- child processes -------------------------------------------------------------------------------------------
def _device() -> Any:
    import torch

    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _peak_memory() -> dict[str, Any]:
    import resource

    import torch

    out: dict[str, Any] = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)}
    if torch.cuda.is_available():
        out["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    return out


def child_ours(recipe_path: Path, output_dir: Path, result: Path) -> None:
    """The real trainer in this process (one rank)."""
    import socket

    with socket.socket() as s:  # a free rendezvous port: a single process otherwise takes 29500, maybe in use
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    )
    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.train.loop import run_training

    code = run_training(load_recipe(recipe_path, [f"output_dir={output_dir}"]))
    result.write_text(json.dumps({"exit_code": code, **_peak_memory()}))


def initial_model(recipe: Any, tokenizer: Any, dtype: Any) -> Any:
    """The trainer's initial model, built as xlam_hpc.train.loop builds it (seeded, sliding window >= seq_length
    dropped), in `dtype`."""
    import inspect

    import torch

    from xlam_hpc.train.model import build_model

    torch.manual_seed(recipe.seed)
    accepted = inspect.signature(build_model).parameters
    kwargs = {"dtype": dtype, "seq_length": recipe.collate.seq_length, "seed": recipe.seed}
    return build_model(recipe.model, tokenizer, **{k: v for k, v in kwargs.items() if k in accepted})


def child_plain(recipe_path: Path, result: Path, *, compile: bool) -> None:
    import torch

    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.stream import build_loader
    from xlam_hpc.train.loop import lr_lambda

    recipe = load_recipe(recipe_path)
    t = recipe.train
    device = _device()
    cuda = device.type == "cuda"
    tokenizer = recipe.load_tokenizer()
    loader = build_loader(recipe.data, recipe.collate, tokenizer, rank=0, world_size=1, seed=recipe.seed, task="sft")
    try:
        batches = [next(loader) for _ in range(t.max_steps)]
    finally:
        loader.close()
    model = initial_model(recipe, tokenizer, torch.bfloat16 if cuda else torch.float32).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, fused=cuda)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.schedule, t.warmup_steps, t.max_steps))
    run = torch.compile(model) if compile else model
    keys = ("input_ids", "position_ids", "labels")
    on_device = [{k: b[k].to(device) for k in keys} for b in batches]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    sync()
    at, losses = [time.monotonic()], []
    for inputs in on_device:
        loss = run(**inputs, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # a sync per step, as ours logs its loss every step
        sync()
        at.append(time.monotonic())
    out = {
        "step_end_times": at,
        "tokens": [int(b["num_tokens"]) for b in batches],
        "rows": [int(b["input_ids"].shape[0]) for b in batches],
        "sample_ids": [b["sample_ids"] for b in batches],
        "losses": losses,
        "parameters": sum(p.numel() for p in model.parameters()),
        **_peak_memory(),
    }
    result.write_text(json.dumps(out))


# -- the parent ------------------------------------------------------------------------------------------------
def _spawn(args: list[str], log: Path, timeout_s: float, trace: Path | None) -> tuple[int, dict[int, float]]:
    """Run a child of this script; with `trace`, timestamp each step's trace line as it arrives."""
    arrivals: dict[int, float] = {}
    seen = 0
    started = time.monotonic()
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        while True:
            done = proc.poll() is not None
            if trace is not None and trace.exists():
                with trace.open("rb") as f:
                    f.seek(seen)
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                now = time.monotonic()
                for line in complete.splitlines():
                    arrivals.setdefault(json.loads(line)["step"], now)
                seen += len(complete)
            if done:
                return proc.returncode, arrivals
            if time.monotonic() - started > timeout_s:
                proc.kill()
                proc.wait()
                return -9, arrivals
            time.sleep(0.005)


def _rate(tokens: dict[int, int], at: dict[int, float], steps: int, warmup: int) -> dict[str, Any]:
    measured = list(range(warmup + 1, steps + 1))
    total = sum(tokens[s] for s in measured)
    seconds = at[steps] - at[warmup]
    return {
        "tokens_per_s": round(total / seconds, 1),
        "real_tokens_measured": total,
        "seconds_measured": round(seconds, 3),
        "step_seconds": [round(at[s] - at[s - 1], 3) for s in measured],
        "first_steps_seconds": [round(at[s] - at[s - 1], 3) for s in range(1, warmup + 1) if s - 1 in at],
    }


def run_ours(name: str, recipe: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    out, result, log = work / name, work / f"{name}.result.json", work / f"{name}.log"
    started = time.monotonic()
    code, arrivals = _spawn(
        ["--child", "ours", "--recipe", str(recipe), "--output-dir", str(out), "--result", str(result)],
        log,
        args.run_timeout,
        out / "trace" / "rank0.jsonl",
    )
    wall = time.monotonic() - started
    text = log.read_text(errors="replace")
    if code != 0 or not result.exists():
        return {"error": f"exit {code}", "log_tail": text[-3000:], "process_wall_s": round(wall, 1)}
    trace = {r["step"]: r for r in map(json.loads, (out / "trace" / "rank0.jsonl").read_text().splitlines())}
    steps, warmup = args.steps, args.warmup_steps
    arrivals[0] = arrivals.get(0, started)
    kernels = [line.split("kernels: ", 1)[1] for line in text.splitlines() if "kernels: " in line]
    micro = [int(x) for x in __import__("re").findall(r"'micro_batches': (\d+)", text)]
    res = {
        **_rate({s: trace[s]["tokens"] for s in trace}, arrivals, steps, warmup),
        **json.loads(result.read_text()),
        "losses": [round(trace[s]["loss"], 4) for s in sorted(trace)],
        "sample_ids": [trace[s]["sample_ids"] for s in sorted(trace)],
        "pad_fraction_mean": round(sum(trace[s]["pad_fraction"] for s in trace) / len(trace), 4),
        "micro_batches_per_step": micro,
        "kernels_log": kernels[0] if kernels else None,
        "start_to_first_step_s": round(arrivals[1] - started, 1) if 1 in arrivals else None,
        "process_wall_s": round(wall, 1),
    }
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)  # a 1B run's checkpoint is 12 GB
    return res


def run_plain(name: str, recipe: Path, work: Path, args: argparse.Namespace, *, compile: bool) -> dict[str, Any]:
    result, log = work / f"{name}.result.json", work / f"{name}.log"
    started = time.monotonic()
    cmd = ["--child", "plain", "--recipe", str(recipe), "--result", str(result)] + (["--compile"] if compile else [])
    code, _ = _spawn(cmd, log, args.run_timeout, None)
    wall = time.monotonic() - started
    if code != 0 or not result.exists():
        return {"error": f"exit {code}", "log_tail": log.read_text(errors="replace")[-3000:]}
    r = json.loads(result.read_text())
    at = dict(enumerate(r.pop("step_end_times")))
    tokens = dict(enumerate(r.pop("tokens"), start=1))
    return {
        **_rate(tokens, at, args.steps, args.warmup_steps),
        **r,
        "losses": [round(x, 4) for x in r["losses"]],
        "process_wall_s": round(wall, 1),
    }


def run_attention(args: argparse.Namespace) -> dict[str, Any]:
    """bench/attention_gpu.py in a child: packed isolation per attention implementation, packed vs unpacked."""
    cmd = [sys.executable, str(ROOT / "bench" / "attention_gpu.py")] + (["--cpu-dry-run"] if args.cpu_dry_run else [])
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=args.run_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.run_timeout} s"}
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout)


def machine() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    with contextlib.suppress(ImportError):
        import deepspeed

        info["deepspeed"] = deepspeed.__version__
    with contextlib.suppress(ImportError):
        import liger_kernel  # noqa: F401

        info["liger_kernel"] = True
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
        info["cuda"] = torch.version.cuda
    return info


def summarize(results: dict[str, dict[str, Any]], peak: float | None) -> dict[str, Any]:
    """Tokens/s, MFU and peak memory per run; ratios of ours to the plain loop; memory flatness."""
    params = next((r["parameters"] for r in results.values() if "parameters" in r), None)
    table: dict[str, Any] = {}
    for name, r in results.items():
        if name == "attention":
            continue
        if "tokens_per_s" not in r:
            table[name] = {"error": r.get("error")}
            continue
        mfu = 6 * params * r["tokens_per_s"] / (peak * 1e12) if params and peak else None
        table[name] = {
            "tokens_per_s": r["tokens_per_s"],
            "mfu": round(mfu, 4) if mfu is not None else None,
            "peak_allocated_gib": r.get("peak_allocated_gib"),
            "peak_rss_gib": r.get("peak_rss_gib"),
        }

    def ratio(a: str, b: str) -> float | None:
        if "tokens_per_s" in table.get(a, {}) and "tokens_per_s" in table.get(b, {}):
            return round(table[a]["tokens_per_s"] / table[b]["tokens_per_s"], 3)
        return None

    out: dict[str, Any] = {
        "parameters": params,
        "runs": table,
        "ratio_ours_plain": ratio("ours", "plain"),
        "ratio_ours_compile_plain_compile": ratio("ours_compile", "plain_compile"),
        "ratio_ours_compile_ours": ratio("ours_compile", "ours"),
        "ratio_plain_compile_plain": ratio("plain_compile", "plain"),
        "ratio_ours_liger_ours": ratio("ours_liger", "ours"),
    }
    if "attention" in results:
        out["attention"] = results["attention"]
    one, two = results.get("ours", {}), results.get("ours_2x", {})
    key = "peak_allocated_gib" if "peak_allocated_gib" in one else "peak_rss_gib"
    if key in one and key in two:
        out["micro_batching"] = {
            "memory_measure": key,
            "peak_1x": one[key],
            "peak_2x": two[key],
            "peak_ratio_2x_1x": round(two[key] / one[key], 3),
            "micro_batches_per_step_1x": one.get("micro_batches_per_step"),
            "micro_batches_per_step_2x": two.get("micro_batches_per_step"),
            "flat": two[key] <= one[key] * 1.1,
        }
    if "losses" in results.get("ours", {}) and "losses" in results.get("plain", {}):
        out["first_step_loss"] = {"ours": results["ours"]["losses"][0], "plain": results["plain"]["losses"][0]}
        out["same_batches_ours_plain"] = results["ours"]["sample_ids"] == results["plain"]["sample_ids"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny shapes on CPU (every path except CUDA)")
    parser.add_argument("--runs", default=",".join(r for r in ALL_RUNS if r != "ours_liger"), help=f"of {ALL_RUNS}")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=3, help="first steps left out (compilation happens there)")
    parser.add_argument("--samples", type=int, default=80, help="samples per step (~8 packed rows of 4096)")
    parser.add_argument("--seq-length", type=int, default=4096)
    parser.add_argument("--micro-batch-tokens", type=int, default=16384)
    parser.add_argument("--records", type=int, default=4000, help="corpus size")
    parser.add_argument("--model", default="mistral-1b")
    parser.add_argument("--attn", default="auto", help="model.attn_implementation of our runs")
    parser.add_argument("--model-overrides", default="", help="JSON: preset config overrides")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 dense peak (else by name)")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="also write train_gpu.json and logs here")
    parser.add_argument("--work-dir", default=None, help="default: /dev/shm when it has room, else a temp dir")
    parser.add_argument("--keep", action="store_true")
    # child mode (internal)
    parser.add_argument("--child", choices=("ours", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "ours":
        child_ours(Path(args.recipe), Path(args.output_dir), Path(args.result))
        return 0
    if args.child == "plain":
        child_plain(Path(args.recipe), Path(args.result), compile=args.compile)
        return 0

    import torch

    if args.cpu_dry_run:
        args.model = "tiny-mistral"
        args.model_overrides = args.model_overrides or json.dumps({"hidden_size": 64, "num_hidden_layers": 2})
        args.seq_length, args.micro_batch_tokens, args.records = 1024, 2048, 200
        args.samples, args.steps, args.warmup_steps = (
            min(args.samples, 8),
            min(args.steps, 4),
            min(args.warmup_steps, 1),
        )
        args.run_timeout = max(args.run_timeout, 1500.0)  # a cold torch.compile on 2 busy cores takes minutes
    elif not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or use --cpu-dry-run", file=sys.stderr)
        return 2
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in ALL_RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {ALL_RUNS}")

    # Only the JSON goes to stdout: everything else (library warnings, C-level output) goes to stderr.
    real_stdout = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)
    info = machine()
    peak = args.peak_tflops or peak_tflops(info.get("gpu", ""))
    if args.cpu_dry_run and peak is None:
        peak = 1.0  # a placeholder so the MFU arithmetic runs; meaningless on CPU
    base = Path(args.work_dir) if args.work_dir else None
    if base is None and Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 60 * GIB:
        base = Path("/dev/shm")  # the 12 GB checkpoint + export of each ours run are written at memory speed
    work = Path(tempfile.mkdtemp(prefix="xlam-bench-gpu-", dir=base))
    began = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    try:
        shards = build_shards(work, args.records)
        recipes = {
            "ours": write_recipe(work / "ours.yaml", shards, args, args.samples),
            "ours_2x": write_recipe(work / "ours_2x.yaml", shards, args, 2 * args.samples),
            "ours_compile": write_recipe(work / "ours_compile.yaml", shards, args, args.samples, compile=True),
            "ours_liger": write_recipe(work / "ours_liger.yaml", shards, args, args.samples, fused_kernels=True),
        }
        for name in runs:
            print(f"[train_gpu] {name} ...", file=sys.stderr, flush=True)
            if name == "attention":
                results[name] = run_attention(args)
            elif name.startswith("ours"):
                results[name] = run_ours(name, recipes[name], work, args)
            else:
                results[name] = run_plain(name, recipes["ours"], work, args, compile=name == "plain_compile")
            print(f"[train_gpu] {name}: {results[name].get('tokens_per_s', results[name])}", file=sys.stderr)
            if args.out:  # partial results survive a time limit
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / "train_gpu.partial.json").write_text(json.dumps(results, indent=1))
        report = {
            "bench": "train_gpu",
            "dry_run": args.cpu_dry_run,
            "model": args.model,
            "model_overrides": json.loads(args.model_overrides) if args.model_overrides else {},
            "seq_length": args.seq_length,
            "samples_per_step": args.samples,
            "micro_batch_tokens": args.micro_batch_tokens,
            "steps_per_run": args.steps,
            "steps_measured": args.steps - args.warmup_steps,
            "peak_tflops": peak,
            **summarize(results, peak),
            "details": {k: {kk: vv for kk, vv in v.items() if kk != "sample_ids"} for k, v in results.items()},
            "machine": info,
            "total_s": round(time.monotonic() - began, 1),
        }
        if args.out:
            out = Path(args.out)
            (out / "train_gpu.json").write_text(json.dumps(report, indent=1))
            for log in work.glob("*.log"):
                shutil.copy(log, out / log.name)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

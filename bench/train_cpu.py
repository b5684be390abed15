"""Training benchmark on CPU: prints one JSON object; the ratios are measured against baselines in the same run.

  python bench/train_cpu.py [--steps 8] [--warmup-steps 2] [--batch 4] [--hidden 512 --layers 8 --intermediate 1376]
                            [--no-trl]

Model: the tiny-mistral preset resized through model.config_overrides (default hidden 512, 8 layers, MLP 1376,
8 heads, 4 KV heads; 56.8M parameters with the Mistral v3 vocabulary of 32768): the decoder layers hold more of
the FLOPs than the LM head, unlike the 2-layer hidden-64 preset. fp32, one process, torch's default threads.

Data: glaive_toolcall_en_demo.head20.json + xlam_fc_sample.jsonl from tests/data, converted and sharded into a
temp dir (24 conversations, 197-1024 tokens with the built-in template and the mistral-v3 tokenizer).

Ours: `python -m xlam_hpc train RECIPE output_dir=...` in a subprocess, exactly as users run it: packing
(seq_length 1024), chat_template builtin, the model above (dropout 0), ZeRO-2, one process (torch's default
thread count), global_batch_size samples per step, trace_samples true, log_interval 1; the step code is
whatever the trainer runs (micro-batches, chunked LM loss).
Tokens/s = real (non-pad) tokens of steps warmup+1..N / wall time of those steps. The wall time is taken from
the outside: this script polls the trace file (`trace/rank0.jsonl`, flushed once per optimizer step) every
5 ms and timestamps each step's line, so step k's time is arrival(k) - arrival(k-1) and covers the whole
loop (data, forward/backward/step, logging, trace). Tokens per step come from the trace (`tokens`: non-pad).
Cross-check: the same quantity from our log lines (`tokens/s` of a one-step window, so a step's seconds =
its trace tokens / that rate).
The throughput run saves only after its last step (so no save falls inside a timed step); its log line
'saved checkpoint-N in X s' is the save time. A second run on the same output_dir (max_steps N+1, the
FINISHED marker removed, as a job extended past its end) logs 'resumed from checkpoint-N (step N) in X s':
the load time (DeepSpeed load_checkpoint + loader state + RNG).

Baseline 1, plain PyTorch loop (in this process, after our run): the same packed batches from our loader
(same rows, position_ids, labels; checked against our trace's sample ids), loaded before the timed loop; the
same initial weights (`build_model` as the trainer calls it); `model(input_ids, position_ids, labels).loss`
(transformers' masked mean), backward, clip_grad_norm_(1.0), torch.optim.AdamW + the same LambdaLR; fp32.
Per-step time: time.monotonic() after each optimizer step. Its losses must equal ours.

Baseline 2: TRL `SFTTrainer` with padding (no packing, no DeepSpeed), in this process after our runs:
`SFTConfig(bf16=False, ...)` fp32 on CPU, per_device_train_batch_size = our samples per step,
max_length 1024, report_to none, gradient_checkpointing False (SFTConfig defaults it to True; we do not
recompute activations either), train_sampling_strategy sequential. Model: the same tiny-mistral config and
initial weights (`torch.manual_seed(recipe.seed)` + `xlam_hpc.train.model.build_model`, as the trainer
does). Data: a `datasets.Dataset` of `messages` (+ `tools`) in the conversational format, holding exactly
our run's steps (sample ids from our trace, in step order, so every TRL step holds the same conversations
as ours; a sample our encoder truncated is given with the turns it kept), the same tokenizer with
`chat_template = BUILTIN_TEMPLATE`, assistant_only_loss=True (the template's {% generation %} blocks).
The script checks that TRL's token ids and loss masks equal ours. Per-step wall time from a
TrainerCallback (on_step_end), real tokens per step from the collator's attention_mask.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
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

from xlam_hpc.convert import ConvertConfig, convert_files  # noqa: E402
from xlam_hpc.shard import ShardConfig, write_shards  # noqa: E402

DATA = ROOT / "tests" / "data"
SEQ_LENGTH = 1024
SEED = 7
LR = 1.0e-3
WARMUP_LR_STEPS = 2
STEP_RE = re.compile(r"step (\d+)/(\d+) loss (\S+) lr \S+ tokens/s (\d+) pad ([\d.]+)")
SAVED_RE = re.compile(r"saved checkpoint-(\d+) in ([\d.]+) s")
RESUMED_RE = re.compile(r"resumed from checkpoint-(\d+) \(step (\d+)\) in ([\d.]+) s")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    import deepspeed
    import torch
    import transformers
    import trl

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "mem_mib": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "deepspeed": deepspeed.__version__,
    }


def build_shards(work: Path) -> Path:
    converted = work / "sft.jsonl"
    inputs = [
        DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json",
        DATA / "xlam_fc" / "xlam_fc_sample.jsonl",
    ]
    convert_files(
        ConvertConfig(inputs=[str(p) for p in inputs], output=str(converted), progress=False), log=lambda m: None
    )
    write_shards(
        ShardConfig(inputs=[str(converted)], output_dir=str(work / "sft"), samples_per_shard=8, progress=False)
    )
    return work / "sft"


def model_overrides(args: argparse.Namespace) -> dict[str, int]:
    """tiny-mistral resized: at hidden 512 x 8 layers the decoder layers hold more FLOPs than the LM head
    (32768 x 512), unlike the 2-layer hidden-64 preset where the head (and TRL's extra pass over it) was all."""
    return {
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.hidden // 64,
        "num_key_value_heads": max(1, args.hidden // 128),
    }


def write_recipe(path: Path, shards: Path, steps: int, batch: int, overrides: dict[str, int]) -> Path:
    import yaml

    recipe = {
        "task": "sft",
        "seed": SEED,
        "data": {"shards": [str(shards)], "global_batch_size": batch},
        "collate": {"seq_length": SEQ_LENGTH, "chat_template": "builtin", "packing": True},
        "model": {"name_or_path": "tiny-mistral", "dropout": 0.0, "config_overrides": overrides},
        "train": {
            "max_steps": steps,
            "save_interval": steps,  # one save, after the last timed step
            "lr": LR,
            "warmup_steps": WARMUP_LR_STEPS,
            "schedule": "cosine",
            "deepspeed": "zero2",
            "trace_samples": True,
            "log_interval": 1,
        },
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_subprocess(recipe: Path, out: Path, log: Path, *overrides: str) -> dict[int, tuple[float, float]]:
    """Run `python -m xlam_hpc train`; returns (monotonic time, process CPU seconds) at the arrival of each
    step's trace line."""
    import psutil

    trace = out / "trace" / "rank0.jsonl"
    arrivals: dict[int, tuple[float, float]] = {}
    seen = 0
    cmd = [sys.executable, "-m", "xlam_hpc", "train", str(recipe), f"output_dir={out}", *overrides]
    with log.open("ab") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        child = psutil.Process(proc.pid)
        while True:
            done = proc.poll() is not None
            if trace.exists():
                with trace.open("rb") as f:
                    f.seek(seen)
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                now, cpu = time.monotonic(), 0.0
                if complete and not done:
                    with contextlib.suppress(psutil.Error):
                        times = child.cpu_times()
                        cpu = times.user + times.system
                for line in complete.splitlines():
                    arrivals.setdefault(json.loads(line)["step"], (now, cpu))
                seen += len(complete)
            if done:
                break
            time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
    return arrivals


def run_ours(recipe: Path, out: Path, log: Path, steps: int, warmup: int) -> dict[str, Any]:
    started = time.monotonic()
    arrivals = train_subprocess(recipe, out, log)
    wall = time.monotonic() - started
    trace = {r["step"]: r for r in map(json.loads, (out / "trace" / "rank0.jsonl").read_text().splitlines())}
    text = log.read_text()
    rates = {int(m[1]): int(m[4]) for m in STEP_RE.finditer(text)}
    measured = list(range(warmup + 1, steps + 1))
    tokens = sum(trace[s]["tokens"] for s in measured)
    slots = sum(trace[s]["tokens"] / (1.0 - trace[s]["pad_fraction"]) for s in measured)  # rows x seq_length
    seconds = arrivals[steps][0] - arrivals[warmup][0]
    cpu_seconds = arrivals[steps][1] - arrivals[warmup][1]
    per_step = [round(arrivals[s][0] - arrivals[s - 1][0], 3) for s in measured]
    log_seconds = sum(trace[s]["tokens"] / rates[s] for s in measured)
    saved = [(int(m[1]), float(m[2])) for m in SAVED_RE.finditer(text)]
    return {
        "tokens_per_s": round(tokens / seconds, 1),
        "tokens_per_s_from_log_lines": round(tokens / log_seconds, 1),
        "real_tokens_measured": tokens,
        "seconds_measured": round(seconds, 3),
        "cpu_seconds_measured": round(cpu_seconds, 3),
        "tokens_per_cpu_s": round(tokens / cpu_seconds, 1) if cpu_seconds > 0 else None,
        "step_seconds": per_step,
        "first_steps_seconds_from_log": [round(trace[s]["tokens"] / rates[s], 3) for s in range(1, warmup + 1)],
        "pad_fraction": round(1.0 - tokens / slots, 4),
        "losses": [round(trace[s]["loss"], 4) for s in range(1, steps + 1)],
        "process_wall_s": round(wall, 1),
        "saved": saved,
        "trace": trace,
    }


def run_resume(recipe: Path, out: Path, log: Path, steps: int) -> dict[str, Any]:
    (out / "FINISHED").unlink()  # otherwise a restart of a finished run exits at once
    started = time.monotonic()
    train_subprocess(recipe, out, log, f"train.max_steps={steps + 1}", f"train.save_interval={steps + 1}")
    found = RESUMED_RE.search(log.read_text())
    if found is None:
        raise SystemExit(f"the second run did not resume:\n{log.read_text()[-3000:]}")
    return {
        "checkpoint": int(found[1]),
        "load_s": float(found[3]),
        "process_wall_s": round(time.monotonic() - started, 1),
    }


def trl_conversations(recipe_path: Path, trace: dict[int, dict[str, Any]], tokenizer: Any) -> tuple[list, list]:
    """Our run's samples in step order, as TRL rows, plus our (ids, mask) for each, to check TRL's tokenization."""
    import msgspec

    from xlam_hpc.collate import SampleEncoder
    from xlam_hpc.collate.messages import to_hf_messages, tools_json
    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.stream import open_catalog

    recipe = load_recipe(recipe_path)
    catalog = open_catalog(recipe.data.shards)
    encoder = SampleEncoder(tokenizer, recipe.collate)
    rows, ours = [], []
    for step in sorted(trace):
        for sid in trace[step]["sample_ids"]:
            source, index = sid.rsplit(":", 1)
            rec = catalog.readers[source].record(source, int(index))
            (sample,) = encoder.encode_sft([(sid, rec)])
            # a truncated sample keeps the system prompt and tools and drops leading user-turn groups: find the cut
            cuts = [0] + [i for i, t in enumerate(rec.conversation) if t.role == "user" and i > 0]
            for cut in cuts:
                kept = msgspec.structs.replace(rec, conversation=rec.conversation[cut:])
                text = encoder.renderer.render(kept.task_instruction, kept.tools, kept.conversation).text
                if encoder.backend.encode(text, add_special_tokens=False).ids == sample.input_ids.tolist():
                    break
            else:
                raise SystemExit(f"cannot reproduce sample {sid} from its record")
            rows.append(
                {
                    "messages": to_hf_messages(kept.task_instruction, kept.conversation),
                    "tools": json.dumps(tools_json(kept.tools)) if kept.tools else None,
                }
            )
            ours.append((sample.input_ids.tolist(), sample.train_mask.astype(int).tolist()))
    return rows, ours


def initial_model(recipe: Any, tokenizer: Any) -> Any:
    """The trainer's initial model, built as `xlam_hpc.train.loop` builds it on one CPU process (fp32, the
    preset's config with the recipe's overrides, a sliding window >= seq_length dropped, seeded init)."""
    import inspect

    import torch

    from xlam_hpc.train.model import build_model

    torch.manual_seed(recipe.seed)
    accepted = inspect.signature(build_model).parameters
    kwargs = {"dtype": torch.float32, "seq_length": recipe.collate.seq_length, "seed": recipe.seed}
    return build_model(recipe.model, tokenizer, **{k: v for k, v in kwargs.items() if k in accepted})


def our_batches(recipe: Any, tokenizer: Any, steps: int) -> list[dict[str, Any]]:
    """The packed batches our trainer trains on (its loader: rank 0 of 1, the recipe's seed), in step order."""
    from xlam_hpc.stream import build_loader

    loader = build_loader(recipe.data, recipe.collate, tokenizer, rank=0, world_size=1, seed=recipe.seed, task="sft")
    try:
        return [next(loader) for _ in range(steps)]
    finally:
        loader.close()


def run_plain(recipe_path: Path, trace: dict[int, dict[str, Any]], steps: int, warmup: int) -> dict[str, Any]:
    """The baseline a user writes without us: the same packed rows (input_ids, position_ids, labels; no attention
    mask, so transformers masks across packed samples from position_ids, as in our step) loaded before the timed
    loop, `model(..., labels=labels).loss` (transformers' masked mean over the labelled tokens), backward,
    `clip_grad_norm_(1.0)` (ours clips too), `torch.optim.AdamW` step with the same LambdaLR schedule, fp32."""
    import torch

    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.train.loop import lr_lambda

    recipe = load_recipe(recipe_path)
    t = recipe.train
    tokenizer = recipe.load_tokenizer()
    batches = our_batches(recipe, tokenizer, steps)
    same_samples = [b["sample_ids"] for b in batches] == [trace[s]["sample_ids"] for s in range(1, steps + 1)]
    model = initial_model(recipe, tokenizer)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.schedule, t.warmup_steps, t.max_steps))
    at, cpu, losses = {0: time.monotonic()}, {0: time.process_time()}, []
    for step, batch in enumerate(batches, start=1):
        out = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"], use_cache=False
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        at[step], cpu[step] = time.monotonic(), time.process_time()
    measured = list(range(warmup + 1, steps + 1))
    tokens = sum(batches[s - 1]["num_tokens"] for s in measured)
    seconds = at[steps] - at[warmup]
    cpu_seconds = cpu[steps] - cpu[warmup]
    return {
        "tokens_per_s": round(tokens / seconds, 1),
        "real_tokens_measured": tokens,
        "seconds_measured": round(seconds, 3),
        "cpu_seconds_measured": round(cpu_seconds, 3),
        "tokens_per_cpu_s": round(tokens / cpu_seconds, 1),
        "step_seconds": [round(at[s] - at[s - 1], 3) for s in measured],
        "first_steps_seconds": [round(at[s] - at[s - 1], 3) for s in range(1, warmup + 1)],
        "losses": [round(x, 4) for x in losses],
        "same_samples_per_step_as_ours": same_samples,
        "rows_per_step": [int(b["input_ids"].shape[0]) for b in batches],
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.get_output_embeddings().weight.shape[0],
        "sliding_window": getattr(model.config, "sliding_window", None),
    }


def run_trl(recipe_path: Path, trace: dict[int, dict[str, Any]], steps: int, warmup: int, batch: int, work: Path):
    from datasets import Dataset, Features, Json, List, Value
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from xlam_hpc.collate import BUILTIN_TEMPLATE, load_tokenizer
    from xlam_hpc.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    tokenizer = load_tokenizer(recipe.tokenizer)
    rows, ours = trl_conversations(recipe_path, trace, tokenizer)
    tokenizer.chat_template = BUILTIN_TEMPLATE
    # Json keeps each message's own keys (Arrow structs would add null keys that the template would render)
    dataset = Dataset.from_list(rows, features=Features({"messages": List(Json()), "tools": Value("string")}))
    model = initial_model(recipe, tokenizer)

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.at: dict[int, float] = {}
            self.cpu: dict[int, float] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.at[0], self.cpu[0] = time.monotonic(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.at[state.global_step], self.cpu[state.global_step] = time.monotonic(), time.process_time()

    clock = Clock()
    config = SFTConfig(
        output_dir=str(work / "trl"),
        bf16=False,
        use_cpu=True,
        per_device_train_batch_size=batch,
        max_length=SEQ_LENGTH,
        packing=False,
        padding_free=False,
        assistant_only_loss=True,
        gradient_checkpointing=False,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=WARMUP_LR_STEPS,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        seed=recipe.seed,
        disable_tqdm=True,
    )
    started = time.monotonic()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
    init_s = time.monotonic() - started
    prepared = trainer.train_dataset
    same_ids = [list(r["input_ids"]) for r in prepared] == [ids for ids, _ in ours]
    theirs_mask = [[int(x != -100) for x in r["labels"]] if "labels" in r else r["assistant_masks"] for r in prepared]
    same_mask = theirs_mask == [mask for _, mask in ours]

    batches: list[tuple[int, int]] = []
    inner = trainer.data_collator

    def counting_collator(examples):
        out = inner(examples)
        batches.append((int(out["attention_mask"].sum()), int(out["input_ids"].numel())))
        return out

    trainer.data_collator = counting_collator
    result = trainer.train()
    measured = list(range(warmup + 1, steps + 1))
    tokens = sum(batches[s - 1][0] for s in measured)
    slots = sum(batches[s - 1][1] for s in measured)
    seconds = clock.at[steps] - clock.at[warmup]
    cpu_seconds = clock.cpu[steps] - clock.cpu[warmup]
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens_per_s": round(tokens / seconds, 1),
        "real_tokens_measured": tokens,
        "seconds_measured": round(seconds, 3),
        "cpu_seconds_measured": round(cpu_seconds, 3),
        "tokens_per_cpu_s": round(tokens / cpu_seconds, 1),
        "step_seconds": [round(clock.at[s] - clock.at[s - 1], 3) for s in measured],
        "first_steps_seconds": [round(clock.at[s] - clock.at[s - 1], 3) for s in range(1, warmup + 1)],
        "pad_fraction": round(1.0 - tokens / slots, 4),
        "losses": losses,
        "train_runtime_s": round(result.metrics["train_runtime"], 1),
        "trainer_init_s": round(init_s, 1),
        "assistant_only_loss": True,
        "same_token_ids_as_ours": same_ids,
        "same_loss_mask_as_ours": same_mask,
        "real_tokens_per_step_equal_ours": [b[0] for b in batches[:steps]]
        == [trace[s]["tokens"] for s in range(1, steps + 1)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (incl. warm-up)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="first steps left out of the rates")
    parser.add_argument("--batch", type=int, default=4, help="samples per step (ours: global_batch_size)")
    parser.add_argument("--hidden", type=int, default=512, help="model hidden size (heads: hidden / 64)")
    parser.add_argument("--layers", type=int, default=8, help="decoder layers")
    parser.add_argument("--intermediate", type=int, default=1376, help="MLP intermediate size")
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL baseline (and the resume run)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (path in the JSON)")
    args = parser.parse_args()

    # Only the JSON goes to stdout: everything else (TRL's printed logs, C-level output) goes to stderr.
    real_stdout = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)
    began = time.monotonic()
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="xlam-bench-train-"))
    overrides = model_overrides(args)
    try:
        shards = build_shards(work)
        recipe = write_recipe(work / "recipe.yaml", shards, args.steps, args.batch, overrides)
        out, log = work / "ours", work / "ours.log"
        ours = run_ours(recipe, out, log, args.steps, args.warmup_steps)
        load_after_ours = loadavg()
        trace = ours.pop("trace")
        plain = run_plain(recipe, trace, args.steps, args.warmup_steps)
        resumed = trl = None
        if not args.no_trl:
            resumed = run_resume(recipe, out, work / "resume.log", args.steps)
            trl = run_trl(recipe, trace, args.steps, args.warmup_steps, args.batch, work)
        saved = dict(ours.pop("saved"))
        result = {
            "bench": "train_cpu",
            "method": (
                "real (non-pad) tokens of steps warmup+1..N / their wall time; ours: arrival times of the per-step "
                "trace lines of `python -m xlam_hpc train` (polled every 5 ms; start-up and the first steps "
                "excluded), plain loop: time.monotonic after each optimizer step, TRL: on_step_end times"
            ),
            "model": {
                "preset": "tiny-mistral",
                **overrides,
                "vocab_size": plain["vocab_size"],
                "parameters": plain["parameters"],
                "sliding_window": plain["sliding_window"],
            },
            "samples_per_step": args.batch,
            "seq_length": SEQ_LENGTH,
            "steps_per_run": args.steps,
            "steps_measured": args.steps - args.warmup_steps,
            "torch_threads": plain["torch_threads"],
            "ours_tokens_per_s": ours["tokens_per_s"],
            "plain_tokens_per_s": plain["tokens_per_s"],
            "trl_tokens_per_s": trl["tokens_per_s"] if trl else None,
            "ratio_ours_plain": round(ours["tokens_per_s"] / plain["tokens_per_s"], 3),
            "target_ratio_ours_plain": 0.9,
            "ratio_ours_trl": round(ours["tokens_per_s"] / trl["tokens_per_s"], 2) if trl else None,
            "first_step_loss": {"ours": ours["losses"][0], "plain": plain["losses"][0]},
            "ours_pad_fraction": ours["pad_fraction"],
            "trl_pad_fraction": trl["pad_fraction"] if trl else None,
            "checkpoint_save_s": saved.get(args.steps),
            "checkpoint_load_s": resumed["load_s"] if resumed else None,
            "checkpoint_bytes": sum(
                p.stat().st_size for p in (out / f"checkpoint-{args.steps}").rglob("*") if p.is_file()
            ),
            "ours": ours,
            "plain": plain,
            "trl": trl,
            "resume_run": resumed,
            "machine": {**machine(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
            "loadavg_start": load_start,
            "loadavg_after_ours": load_after_ours,
            "loadavg_end": loadavg(),
            "total_s": round(time.monotonic() - began, 1),
        }
        if args.keep:
            result["work_dir"] = str(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loader benchmark: prints one JSON object; every number is compared with a baseline from the same run.

  python bench/loader.py [--records 3000] [--seq-length 4096] [--batch 128]
  python bench/loader.py --scale      # index math only: synthetic catalogs up to 100k shards / 100M samples

Corpus: every SFT record the converters make from tests/data (real samples of 13 formats), copied with
new ids up to --records, sharded twice (JSON only, and pre-tokenized).
Measured:
- on-the-fly loader tokens/s (0, 1, 2 workers) vs tokenizer-only tokens/s on the same rendered texts: the
  batch call HF's `tokenizer(texts)` makes (Rust encode_batch, all cores; the headline ratio), the ids-only
  batch call (encode_batch_fast, all cores) and one text at a time on one core, each ratio printed;
- pre-tokenized loader tokens/s vs on-the-fly;
- useful (non-pad) tokens/s vs an xLAM-style pipeline: HF `datasets` webdataset streams of the same
  shards + `interleave_datasets(probabilities)` + chat template per sample + padding to seq_length, fed the
  way HF Trainer feeds it (Python lists batched by transformers' `default_data_collator`: the headline
  ratio); the same pipeline ending in `.with_format("torch")` is printed as a second figure;
- balance across ranks: max/mean real tokens per rank per step (num_tokens of the loader's batches) at 4
  and 8 ranks, balance "samples" (contiguous slices) vs "tokens", on pre-tokenized and JSON shards, and
  whether the realized mixture (samples per source over all ranks) is the same;
- resume cost: load_state_dict + first batch at global sample 100k vs at 0, next to a
  `skip_first_batches`-style replay (measured over --replay-samples, scaled to 100k);
- non-pad fraction with packing at --seq-length; loader state size in bytes;
- a model's own chat template (real Qwen2.5 / Qwen3 / Llama 3.1 / Hermes 3 tokenizers and templates from
  tests/data/model_families): records/s of the encoder (render + tokenize + masks) with spans derived
  from prefix renderings, vs the built-in template's fast path on the same records, vs one plain Jinja
  render of the whole conversation per record + tokenization (what `apply_chat_template` costs: the floor
  if a template had {% generation %} blocks); and the pre-tokenized loader with that template vs on the fly.
"""

from __future__ import annotations

import argparse
import gc
import glob
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# `datasets` (the xLAM-style baseline) would otherwise wait on hub lookups on machines without the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from bench.corpus import sft_corpus  # noqa: E402
from xlam_hpc.collate import CollateConfig, load_tokenizer  # noqa: E402
from xlam_hpc.collate.pretokenize import write_tokenized_shards  # noqa: E402
from xlam_hpc.shard import ShardConfig, write_shards  # noqa: E402
from xlam_hpc.stream import StreamConfig, build_loader  # noqa: E402


def tokens_per_s(loader, steps: int) -> tuple[float, float]:
    next(loader)  # warm-up (workers, caches)
    t, toks, pad = time.perf_counter(), 0, []
    for _ in range(steps):
        b = next(loader)
        toks += b["num_tokens"]
        pad.append(b["pad_fraction"])
    return toks / (time.perf_counter() - t), 1 - statistics.fmean(pad)


def tokenizer_only(loader, tokenizer, positions: range) -> dict[str, float]:
    """Tokens/s of the Rust tokenizer alone on the rendered texts of those positions: the batch call HF's
    `tokenizer(texts)` makes (encode_batch: ids and offsets, all cores), the ids-only batch call
    (encode_batch_fast, all cores: the floor the loader's built-in-template path uses) and one text at a
    time on one core."""
    texts = []
    for p in positions:
        source, index = loader.order.sample_at(p)
        rec = loader.catalog.readers[source].record(source, index)
        texts.append(loader.encoder.renderer.render(rec.task_instruction, rec.tools, rec.conversation).text)
    backend = tokenizer.backend_tokenizer
    rates = {}
    for name, run in (
        ("batch_call_all_cores", lambda: backend.encode_batch(texts, add_special_tokens=False)),
        ("ids_only_batch_all_cores", lambda: backend.encode_batch_fast(texts, add_special_tokens=False)),
        ("serial_one_core", lambda: [backend.encode(x, add_special_tokens=False) for x in texts]),
    ):
        t = time.perf_counter()
        n = sum(len(e.ids) for e in run())
        rates[name] = n / (time.perf_counter() - t)
    return rates


def _tar_records(paths: list[str]):
    """Every .json member of the given tars, as text (Arrow cannot infer one schema for agent records)."""
    import tarfile

    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    yield {"json": tar.extractfile(member).read().decode()}


def xlam_style(
    shards: Path, tokenizer, seq_length: int, samples: int, weights: dict[str, float], batch: int = 8
) -> dict[str, float]:
    """xLAM's recipe (actionstudio data pipeline): per-source `datasets` streams of the same tar shards,
    interleave_datasets(probabilities), `.map` applying the chat template and tokenizing with padding to
    seq_length; useful = non-pad tokens delivered per second. Two endings: "trainer" feeds the Python lists
    through a DataLoader with transformers' `default_data_collator`, as HF Trainer does (the faithful,
    fast path); "with_format_torch" converts every row with `.with_format("torch")` (~30x slower)."""
    from datasets import IterableDataset, interleave_datasets
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    from xlam_hpc.collate import BUILTIN_TEMPLATE
    from xlam_hpc.collate.messages import to_hf_messages
    from xlam_hpc.schema import decode_record

    tokenizer.chat_template = BUILTIN_TEMPLATE
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token

    def tokenize(row: dict) -> dict:
        rec = decode_record(row["json"])
        tools = [
            {"type": "function", "function": {"name": x.name, "description": x.description, "parameters": x.parameters}}
            for x in rec.tools
        ]
        return tokenizer.apply_chat_template(
            to_hf_messages(rec.task_instruction, rec.conversation),
            tools=tools or None,
            tokenize=True,
            return_dict=True,
            padding="max_length",
            truncation=True,
            max_length=seq_length,
        )

    def pipeline():
        names = sorted(weights)
        streams = [
            IterableDataset.from_generator(
                _tar_records, gen_kwargs={"paths": sorted(glob.glob(str(shards / f"{n}-*.tar")))}
            )
            for n in names
        ]
        mixed = interleave_datasets(
            streams, probabilities=[weights[n] for n in names], seed=0, stopping_strategy="all_exhausted"
        )
        return mixed.map(tokenize, remove_columns=["json"])

    rates = {}
    t, useful = time.perf_counter(), 0
    for seen, rows in enumerate(DataLoader(pipeline(), batch_size=batch, collate_fn=default_data_collator), 1):
        useful += int(rows["attention_mask"].sum())
        if seen * batch >= samples:
            break
    rates["trainer"] = useful / (time.perf_counter() - t)
    t, useful = time.perf_counter(), 0
    for seen, row in enumerate(pipeline().with_format("torch"), start=1):
        useful += int(row["attention_mask"].sum())
        if seen >= samples:
            break
    rates["with_format_torch"] = useful / (time.perf_counter() - t)
    tokenizer.chat_template = None
    return rates


def balance(shards: Path, tokenizer, collate: CollateConfig, per_step: int, steps: int, worlds=(4, 8)) -> dict:
    """Per world size and balance mode: max/mean real tokens per rank per step (mean, p99 and worst over
    `steps` steps, and Σ max / Σ mean: the step-time cost of waiting for the slowest rank), next to the
    best any assignment could do (per step max(longest sample, total / ranks) / mean: a lower bound), plus
    whether both modes realize the same samples per source."""
    out: dict = {"samples_per_step": per_step, "steps": steps}
    for world in worlds:
        row, mixes = {}, {}
        for mode in ("samples", "tokens"):
            cfg = StreamConfig(shards=[str(shards)], global_batch_size=per_step, balance=mode)
            loaders = [build_loader(cfg, collate, tokenizer, rank=r, world_size=world, seed=0) for r in range(world)]
            ratios, bounds, worst_sum, mean_sum, mix = [], [], 0, 0.0, Counter()
            t = time.perf_counter()
            for _ in range(steps):
                toks, longest = [], 0
                for ld in loaders:
                    b = next(ld)
                    toks.append(b["num_tokens"])
                    mix.update(i.split(":")[0] for i in b["drawn_ids"])
                    longest = max([longest] + [y - x for row_ in b["cu_seqlens"] for x, y in itertools.pairwise(row_)])
                mean = statistics.fmean(toks)
                ratios.append(max(toks) / mean)
                bounds.append(max(longest, mean) / mean)
                worst_sum, mean_sum = worst_sum + max(toks), mean_sum + mean
            ratios.sort()
            row[mode] = {
                "max_over_mean_mean": round(statistics.fmean(ratios), 4),
                "max_over_mean_p99": round(ratios[int(0.99 * (len(ratios) - 1))], 4),
                "max_over_mean_worst": round(ratios[-1], 4),
                "sum_max_over_sum_mean": round(worst_sum / mean_sum, 4),
                "seconds": round(time.perf_counter() - t, 1),
            }
            row["lower_bound_max_over_mean_mean"] = round(statistics.fmean(bounds), 4)
            mixes[mode] = mix
        row["mixture_identical"] = mixes["samples"] == mixes["tokens"]
        row["costs_from"] = "stored token ids" if loaders[0].stored_tokens else "JSON bytes x tokens-per-byte"
        row["samples_per_source"] = dict(sorted(mixes["tokens"].items()))
        out[f"ranks_{world}"] = row
    return out


def scale(shard_counts=(100, 10_000, 100_000), per_shard: int = 1000, sources: int = 4, lookups: int = 20_000) -> dict:
    """Index math at scale, no data files: GlobalOrder over synthetic shard sizes (`per_shard` samples per
    shard, so 100k shards = 100M samples), per-sample sample_at time over `lookups` consecutive positions
    from 0, 1e6 and 1e8 (process CPU time, best of 7 disjoint runs, the catalogs taking turns: the machine
    is shared; the first lookup, which builds an epoch's shard layout, is timed apart), and the peak RSS
    (the imports alone, torch included, are reported apart)."""
    from xlam_hpc.stream import GlobalOrder, MixturePlan, SourceOrder

    imports_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    names = tuple(f"s{k}" for k in range(sources))
    starts = (0, 10**6, 10**8)
    catalogs = {
        shards: GlobalOrder(
            MixturePlan(names, (1 / sources,) * sources, 64, seed=0),
            tuple(SourceOrder(n, (per_shard,) * (shards // sources), seed=0) for n in names),
            (),
        )
        for shards in shard_counts
    }
    first: dict[tuple[int, int], float] = {}
    best: dict[tuple[int, int], float] = {}
    for shards, order in catalogs.items():
        for start in starts:
            t = time.process_time()
            order.sample_at(start)
            first[shards, start] = time.process_time() - t
    for k in range(7):
        for shards, order in catalogs.items():
            for start in starts:
                at = start + 1 + k * lookups
                t = time.process_time()
                for p in range(at, at + lookups):
                    order.sample_at(p)
                dt = (time.process_time() - t) / lookups
                best[shards, start] = min(best.get((shards, start), dt), dt)
    out: dict = {"samples_per_shard": per_shard, "sources": sources, "lookups_per_run": lookups}
    for shards in shard_counts:
        out[f"shards_{shards}"] = {"samples": shards * per_shard} | {
            f"at_{start:.0e}": {
                "us_per_sample": round(best[shards, start] * 1e6, 3),
                "first_lookup_ms": round(first[shards, start] * 1e3, 2),
            }
            for start in starts
        }
    lo, hi = shard_counts[0], shard_counts[-1]
    out[f"ratio_{hi}_over_{lo}"] = {f"at_{s:.0e}": round(best[hi, s] / best[lo, s], 3) for s in starts}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["rss_after_imports_mib"] = round(imports_rss, 1)
    out["targets"] = {"ratio": "<= 1.2", "peak_rss_mib": "< 1024"}
    return out


def resume_seconds(make, positions: tuple[int, ...], repeats: int = 7) -> dict[int, float]:
    """Median seconds of load_state_dict + first batch at each position; positions alternate in every
    repeat so warm-up and machine noise fall on both alike."""
    times: dict[int, list[float]] = {p: [] for p in positions}
    for _ in range(repeats):
        for position in positions:
            loader = make()
            state = loader.state_dict() | {
                "samples_consumed": position,
                "steps_consumed": position // loader.cfg.global_batch_size,
            }
            t = time.perf_counter()
            loader.load_state_dict(state)
            next(loader)
            times[position].append(time.perf_counter() - t)
    return {p: statistics.median(v) for p, v in times.items()}


def _encode_rate(encoder, records: list, chunk: int = 256) -> tuple[float, float]:
    """(records/s, tokens/s) of encode_sft over `records`, in loader-sized chunks."""
    items = [(r.unique_trajectory_id, r) for r in records]
    t, toks = time.perf_counter(), 0
    for at in range(0, len(items), chunk):
        toks += sum(len(s) for s in encoder.encode_sft(items[at : at + chunk]))
    dt = time.perf_counter() - t
    return len(items) / dt, toks / dt


def _plain_render_rate(encoder, tok, records: list) -> float:
    """records/s of one Jinja render of each whole conversation (apply_chat_template's work) + tokenization."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from xlam_hpc.collate.messages import to_hf_messages, tools_json

    r = encoder.renderer
    t = time.perf_counter()
    for rec in records:
        try:
            (text,), _ = render_jinja_template(
                conversations=[
                    to_hf_messages(rec.task_instruction, rec.conversation, r.tool_arguments, r.tool_call_ids)
                ],
                tools=tools_json(rec.tools) or None,
                chat_template=r._pick(bool(rec.tools)),
                **r.kwargs,
            )
        except Exception:  # the template refuses this record (the encoder counts it as rejected)
            continue
        tok.backend_tokenizer.encode(text, add_special_tokens=False)
    return len(records) / (time.perf_counter() - t)


def template_cost(work: Path, corpus: Path, plain: Path, families: list[str], args: argparse.Namespace) -> dict:
    """Prefix-rendering cost of each family's own template against the built-in template (see docstring)."""
    from tests.families import model_folder
    from xlam_hpc.collate import SampleEncoder
    from xlam_hpc.schema import decode_record

    records = [decode_record(line) for line in corpus.read_bytes().splitlines()[:1000]]
    seq_length, batch, steps = args.seq_length, args.batch, args.steps
    builtin = SampleEncoder(load_tokenizer("mistral-v3"), CollateConfig(seq_length=seq_length, chat_template="builtin"))
    base_rps, base_tps = _encode_rate(builtin, records)
    out: dict = {
        "records": len(records),
        "builtin": {"records_per_s": round(base_rps), "tokens_per_s": round(base_tps)},
    }
    for family in families:
        folder = model_folder(family, work / "models")
        tok = load_tokenizer(str(folder))
        collate = CollateConfig(seq_length=seq_length, tool_call_ids="alnum9" if family == "mistral-nemo" else "keep")
        enc = SampleEncoder(tok, collate)
        rps, tps = _encode_rate(enc, records)
        plain_rps = _plain_render_rate(enc, tok, records)
        stored = work / f"stored-{family}"
        write_tokenized_shards(
            ShardConfig(inputs=[str(corpus)], output_dir=str(stored), samples_per_shard=256, progress=False),
            tokenizer=str(folder),
            collate=collate,
        )
        pre = build_loader(StreamConfig(shards=[str(stored)], global_batch_size=batch), collate, tok, seed=0)
        fly = build_loader(StreamConfig(shards=[str(plain)], global_batch_size=batch), collate, tok, seed=0)
        pre_tps, fly_tps = tokens_per_s(pre, steps * 2)[0], tokens_per_s(fly, steps)[0]
        out[family] = {
            "records_per_s": round(rps),
            "tokens_per_s": round(tps),
            "vs_builtin_records_per_s": round(rps / base_rps, 3),
            "plain_render_records_per_s": round(plain_rps),
            "vs_plain_render": round(rps / plain_rps, 3),
            "stats": dict(sorted(enc.stats.items())),
            "loader_on_the_fly_tokens_per_s": round(fly_tps),
            "loader_pretokenized_tokens_per_s": round(pre_tps),
            "pretokenized_vs_on_the_fly": round(pre_tps / fly_tps, 2),
        }
    return out


def packing_fraction(shards: Path, tokenizer, collate: CollateConfig, per_step: int, steps: int = 6) -> float:
    loader = build_loader(StreamConfig(shards=[str(shards)], global_batch_size=per_step), collate, tokenizer, seed=0)
    return 1 - statistics.fmean(next(loader)["pad_fraction"] for _ in range(steps))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--seq-length", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256, help="samples per step (one rank): the packing window")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--replay-samples", type=int, default=4096)
    ap.add_argument("--families", default="qwen2.5,qwen3,llama-3.1,hermes-3", help="model templates to cost")
    ap.add_argument("--only-templates", action="store_true", help="just the model-template section")
    ap.add_argument("--scale", action="store_true", help="just the index math on synthetic catalogs (no data)")
    ap.add_argument("--balance-per-step", default="64,256", help="samples per step of the balance section")
    ap.add_argument("--balance-steps", type=int, default=1000, help="balance steps at the first --balance-per-step")
    ap.add_argument("--balance-json-steps", type=int, default=300, help="the same on JSON shards (tokenized)")
    ap.add_argument("--skip-templates", action="store_true", help="leave out the model-template section")
    args = ap.parse_args()
    if args.scale:
        print(json.dumps({"bench": "loader", "scale": scale()}, indent=1))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    tok = load_tokenizer("mistral-v3")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = sft_corpus(work, args.records)
        collate = CollateConfig(seq_length=args.seq_length, chat_template="builtin")
        plain, stored = work / "plain", work / "stored"
        write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(plain), samples_per_shard=256, progress=False))
        write_tokenized_shards(
            ShardConfig(inputs=[str(corpus)], output_dir=str(stored), samples_per_shard=256, progress=False),
            tokenizer="mistral-v3",
            collate=collate,
        )

        families = [f for f in args.families.split(",") if f]
        templates = {} if args.skip_templates else template_cost(work, corpus, plain, families, args)
        if args.only_templates:
            print(json.dumps({"bench": "loader", "model_templates": templates}, indent=1))
            return

        def make(shards=plain, workers=0):
            cfg = StreamConfig(shards=[str(shards)], global_batch_size=args.batch, num_workers=workers)
            return build_loader(cfg, collate, tok, seed=0)

        gc.collect()
        gc.freeze()  # as the trainer does before its first step (xlam_hpc/train/loop.py)
        fly = make()
        fly_tps, nonpad = tokens_per_s(fly, args.steps)
        tok_rates = tokenizer_only(fly, tok, range(args.batch, args.batch * (args.steps + 1)))
        tok_tps = tok_rates["batch_call_all_cores"]
        by_workers = {"workers_0": fly_tps}
        for workers in (1, 2):
            loader = make(workers=workers)
            by_workers[f"workers_{workers}"] = tokens_per_s(loader, args.steps)[0]
            loader.close()
        pre = make(stored)
        pre_tps, _ = tokens_per_s(pre, args.steps * 4)
        weights = {n: w for n, w in zip(fly.order.names, fly.order.plan.weights, strict=True)}
        # its own tokenizer: the baseline sets a chat template and a pad token, which would change this run's
        # render fingerprint (the pre-tokenized shards would no longer count as this run's tokens)
        xlam = xlam_style(plain, load_tokenizer("mistral-v3"), args.seq_length, args.batch * 3, weights)
        xlam_tps = xlam["trainer"]
        balanced = {}
        first_n = int(args.balance_per_step.split(",")[0])
        for n in map(int, args.balance_per_step.split(",")):  # larger steps: as many samples, fewer steps
            balanced[f"pretokenized_{n}"] = balance(stored, tok, collate, n, args.balance_steps * first_n // n)
            balanced[f"json_{n}"] = balance(plain, tok, collate, n, args.balance_json_steps * first_n // n)
        resume = resume_seconds(make, (0, 100_000))
        at0, at100k = resume[0], resume[100_000]
        packing = {n: round(packing_fraction(stored, tok, collate, n), 4) for n in (64, 128, 256, 512)}
        replay = make()
        t = time.perf_counter()
        for _ in range(args.replay_samples // args.batch):
            next(replay)
        replay_100k = (time.perf_counter() - t) / (args.replay_samples // args.batch * args.batch) * 100_000
        state_bytes = len(json.dumps(fly.state_dict()).encode())
        n_records = sum(fly.catalog.sizes.values())
    result = {
        "bench": "loader",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "corpus": {
            "records": n_records,
            "sources": len(weights),
            "seq_length": args.seq_length,
            "samples_per_step": args.batch,
        },
        "tokenizer_only_tokens_per_s": {k: round(v) for k, v in tok_rates.items()},
        "loader_tokens_per_s": {k: round(v) for k, v in by_workers.items()},
        "loader_vs_tokenizer_only": round(max(by_workers.values()) / tok_tps, 3),
        "loader_vs_tokenizer_only_by_baseline": {
            k: round(max(by_workers.values()) / v, 3) for k, v in tok_rates.items()
        },
        "loader_by_workers_vs_tokenizer_only": {k: round(v / tok_tps, 3) for k, v in by_workers.items()},
        "pretokenized_tokens_per_s": round(pre_tps),
        "pretokenized_vs_on_the_fly": round(pre_tps / fly_tps, 2),
        "xlam_style_useful_tokens_per_s": round(xlam_tps),
        "useful_tokens_vs_xlam_style": round(fly_tps * 1.0 / xlam_tps, 2),
        "xlam_style_with_format_torch_useful_tokens_per_s": round(xlam["with_format_torch"]),
        "useful_tokens_vs_xlam_style_with_format_torch": round(fly_tps / xlam["with_format_torch"], 2),
        "balance": balanced,
        "resume_seconds": {
            "at_0": round(at0, 4),
            "at_100k": round(at100k, 4),
            "ratio": round(at100k / at0, 3),
            "replay_to_100k_estimate": round(replay_100k, 1),
        },
        "packing_non_pad_fraction": round(nonpad, 4),
        "packing_non_pad_fraction_by_samples_per_step": packing,
        "state_bytes": state_bytes,
        "model_templates": templates,
        "targets": {
            "loader_vs_tokenizer_only": ">= 0.9",
            "pretokenized_vs_on_the_fly": ">= 10",
            "useful_tokens_vs_xlam_style": ">= 3",
            "resume_ratio": "<= 1.1",
            "packing_non_pad_fraction": ">= 0.97",
            "state_bytes": "<= 4096",
            "balance_max_over_mean_at_8_ranks": "<= 1.05",
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

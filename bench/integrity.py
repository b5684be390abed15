"""Shard integrity benchmark: prints one JSON object; every rate is compared with the unchecked read in the same run.

  python bench/integrity.py [--records 4000] [--rounds 7] [--world 8] [--steps 8]

Corpus: every SFT record the converters make from tests/data (as bench/loader.py builds it), copied with new
ids up to --records, sharded JSON-only and pre-tokenized (mistral-v3), 256 samples per shard.
Measured over a seeded random order of all samples, a fresh reader per round (shards in the page cache, so the
check's CPU cost is not hidden behind I/O), designs interleaved, best of rounds, as rates per CPU-second of
this process (time.process_time: the 2-core VMs are shared, and wall-clock A/B ratios moved by ±15%):
- reader samples/s: `record()` on the JSON shards, `read_members(tok.ids, tok.mask, tok.len)` on the
  pre-tokenized ones, (a) with the per-member checksum (xxh3), (b) without it, (c) the alternative design: no
  member checksum, a whole-file sha256 of each shard the first time the process opens it; each as a ratio to (b);
- the same for one rank's share of the order (every --world-th sample): with (c) a process still hashes every
  shard it touches, so its cost grows with the world size while (a) stays per sample;
- loader samples/s (build_loader, 0 workers, steady state: two loaders timed in turn) with and without the member
  checksum, JSON and pre-tokenized shards; and the check's share estimated from its CPU time alone per sample
  (xxh3, with zlib.crc32 next to it for comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus import sft_corpus  # noqa: E402
from xlam_hpc.collate import CollateConfig, load_tokenizer  # noqa: E402
from xlam_hpc.collate.pretokenize import write_tokenized_shards  # noqa: E402
from xlam_hpc.errors import ShardError  # noqa: E402
from xlam_hpc.files import sha256_file  # noqa: E402
from xlam_hpc.shard import ShardConfig, ShardInfo, ShardReader, write_shards  # noqa: E402
from xlam_hpc.shard.checksum import CHECKSUMS  # noqa: E402
from xlam_hpc.stream import StreamConfig, build_loader  # noqa: E402

TOKEN_MEMBERS = ("tok.ids", "tok.mask", "tok.len")


class Sha256OnFirstOpen(ShardReader):
    """The alternative design: no per-member check, a whole-file sha256 the first time a process opens a shard."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._checksum = None
        self._verified: set[str] = set()

    def _fd(self, info: ShardInfo) -> int:
        if info.path not in self._verified:
            if sha256_file(self.root / info.path) != info.sha256:
                raise ShardError(f"{self.root / info.path}: sha256 mismatch")
            self._verified.add(info.path)
        return super()._fd(info)


def _reader(kind: str, shards: Path) -> ShardReader:
    if kind == "sha256_first_open":
        return Sha256OnFirstOpen(shards)
    r = ShardReader(shards)
    if kind == "unchecked":
        r._checksum = None
    return r


def reader_rates(shards: Path, order: list[tuple[str, int]], read: Callable, rounds: int) -> dict[str, float]:
    """Best-of-rounds samples per CPU-second per check design; one untimed pass each first, then the designs
    in a rotated order every round."""
    kinds = ["checksum", "unchecked", "sha256_first_open"]
    runs: dict[str, list[float]] = {k: [] for k in kinds}
    for k in range(rounds + 1):
        for kind in kinds[k % 3 :] + kinds[: k % 3]:
            with _reader(kind, shards) as r:
                t = time.process_time()
                for source, i in order:
                    read(r, source, i)
                if k:
                    runs[kind].append(len(order) / (time.process_time() - t))
    rates = {k: max(v) for k, v in runs.items()}
    base = rates["unchecked"]
    return {
        **{f"{k}_samples_per_s": round(v, 1) for k, v in rates.items()},
        "checksum_vs_unchecked": round(rates["checksum"] / base, 4),
        "sha256_first_open_vs_unchecked": round(rates["sha256_first_open"] / base, 4),
    }


def hash_us_per_sample(shards: Path, order: list[tuple[str, int]], members: tuple[str, ...]) -> dict[str, float]:
    """The check's CPU time alone, per sample, over every member the loader reads (best of 5): xxh3 (what the
    reader checks) and, for comparison, zlib.crc32 (what the first version checked)."""
    with _reader("unchecked", shards) as r:
        parts = [p for s, i in order for p in r.read_members(s, i, members)]
    out = {}
    for name, fn in (("xxh3", CHECKSUMS["xxh3"]), ("crc32", zlib.crc32)):
        best = float("inf")
        for _ in range(5):
            t = time.process_time()
            for part in parts:
                fn(part)
            best = min(best, time.process_time() - t)
        out[name] = round(best / len(order) * 1e6, 2)
    out["bytes"] = round(sum(map(len, parts)) / len(order))
    return out


def all_samples(shards: Path, seed: int) -> list[tuple[str, int]]:
    with ShardReader(shards) as r:
        order = [(s, i) for s, n in r.sources.items() for i in range(n)]
    random.Random(seed).shuffle(order)
    return order


def loader_rates(
    shards: Path, collate: CollateConfig, tok: Any, batch: int, steps: int, rounds: int, crc_us: float
) -> dict[str, float]:
    """One rank's loader (0 workers: the readers are the catalog's) with the member checksum on and off, best of
    rounds; and the check's share of the loader's time estimated from its CPU time per sample."""
    loaders = {}
    for check in (True, False):
        loader = build_loader(StreamConfig(shards=[str(shards)], global_batch_size=batch), collate, tok, seed=0)
        for r in loader.catalog.readers.values():
            if not check:
                r._checksum = None
        next(loader)  # warm-up: index loads, first opens
        loaders[check] = loader
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):  # steady state, the two loaders in turn
        for check, loader in loaders.items():
            t = time.process_time()
            for _ in range(steps):
                next(loader)
            runs[check].append(batch * steps / (time.process_time() - t))
    for loader in loaders.values():
        loader.close()
    on, off = max(runs[True]), max(runs[False])
    return {
        "checksum_samples_per_s": round(on, 1),
        "unchecked_samples_per_s": round(off, 1),
        "checksum_vs_unchecked": round(on / off, 4),
        "checksum_share_estimated_from_cpu_time": round(crc_us * 1e-6 * off, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--world", type=int, default=8, help="ranks x workers sharing the order (the per-rank share)")
    ap.add_argument("--seq-length", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=64, help="samples per loader step")
    ap.add_argument("--steps", type=int, default=8, help="loader steps per round")
    ap.add_argument("--loader-rounds", type=int, default=12)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    tok = load_tokenizer("mistral-v3")
    collate = CollateConfig(seq_length=args.seq_length, chat_template="builtin")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = sft_corpus(work, args.records)
        plain, stored = work / "plain", work / "stored"
        write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(plain), samples_per_shard=256, progress=False))
        write_tokenized_shards(
            ShardConfig(inputs=[str(corpus)], output_dir=str(stored), samples_per_shard=256, progress=False),
            tokenizer="mistral-v3",
            collate=collate,
        )
        json_order, tok_order = all_samples(plain, 0), all_samples(stored, 0)
        hash_us = {
            "json": hash_us_per_sample(plain, json_order, ("json",)),
            "pretokenized": hash_us_per_sample(stored, tok_order, TOKEN_MEMBERS),
        }
        crc_us = {k: v["xxh3"] for k, v in hash_us.items()}

        def record(r, s, i):
            return r.record(s, i)

        def tokens(r, s, i):
            return r.read_members(s, i, TOKEN_MEMBERS)

        shard_bytes = sum(f.stat().st_size for f in plain.glob("*.tar"))
        t = time.process_time()
        for f in plain.glob("*.tar"):
            sha256_file(f)
        sha_mb_s = shard_bytes / (time.process_time() - t) / 1e6
        result = {
            "bench": "integrity",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "records": args.records,
            "json_shards": len(list(plain.glob("*.tar"))),
            "json_shard_bytes": shard_bytes,
            "sha256_mb_per_s": round(sha_mb_s, 1),
            "hash_us_per_sample": hash_us,
            "reader_full_pass": {
                "json_record": reader_rates(plain, json_order, record, args.rounds),
                "pretokenized_read_members": reader_rates(stored, tok_order, tokens, args.rounds),
            },
            f"reader_one_rank_of_{args.world}": {
                "json_record": reader_rates(plain, json_order[:: args.world], record, args.rounds),
                "pretokenized_read_members": reader_rates(stored, tok_order[:: args.world], tokens, args.rounds),
            },
            "loader": {
                "json_on_the_fly": loader_rates(
                    plain, collate, tok, args.batch, args.steps, args.loader_rounds, crc_us["json"]
                ),
                "pretokenized": loader_rates(
                    stored, collate, tok, args.batch, args.steps * 8, args.loader_rounds, crc_us["pretokenized"]
                ),
            },
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

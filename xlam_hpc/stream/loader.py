"""The stateful loader of one rank: `build_loader(...)` → iterate batches, `state_dict()`, `load_state_dict()`.

State is a handful of integers plus a fingerprint (a few hundred bytes): the global sample position
reached and the stream's identity. Restoring it costs the same at sample 10⁶ as at 0 — the order is
recomputed from the seed, nothing is replayed — and it may be restored with another world size or
worker count (the position is global). Worker processes, prefetching and in-order delivery are
torchdata's StatefulDataLoader; the dataset inside also speaks torchdata's Stateful protocol, so the
raw DataLoader's own state_dict works too (same world size and workers only). With `balance: tokens`
each step's samples are cut over the ranks by estimated tokens (stream/cost.py, stream/partition.py);
the per-rank batches stay a function of (position, world size), so resume and the trace are unchanged.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from xlam_hpc.collate import CollateConfig, SampleEncoder
from xlam_hpc.collate.pretokenize import render_fingerprint
from xlam_hpc.errors import ConfigError, ResumeError
from xlam_hpc.stream.catalog import Catalog, GlobalOrder, open_catalog
from xlam_hpc.stream.config import StreamConfig
from xlam_hpc.stream.cost import CostModel, measure_ratios
from xlam_hpc.stream.dataset import StepDataset
from xlam_hpc.stream.holdout import HoldOut
from xlam_hpc.stream.partition import per_rank_batch
from xlam_hpc.stream.seeding import seed_worker, worker_generator

__all__ = ["STATE_VERSION", "XlamLoader", "build_loader", "check_source_kinds"]

STATE_VERSION = 1


def _init_worker(seed: int, rank: int, worker_id: int) -> None:
    # A forked child inherits the parent's Rust thread pool without its threads: with
    # TOKENIZERS_PARALLELISM=true, the first batch encode would hang. Workers are the parallelism here,
    # so each tokenizes on one thread (tokenizers reads the variable on every call).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    seed_worker(seed, rank, worker_id)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    # Batches are complete when the dataset yields them; torch's default_convert would walk every list.
    return batch


class XlamLoader:
    """Infinite iterator of step batches for one rank (see module docstring)."""

    def __init__(
        self,
        *,
        cfg: StreamConfig,
        collate: CollateConfig,
        catalog: Catalog,
        order: GlobalOrder,
        encoder: SampleEncoder,
        task: str,
        pad_id: int,
        rank: int,
        world_size: int,
        seed: int,
        stored_tokens: frozenset[str],
        cost: CostModel | None = None,
    ) -> None:
        self.cfg, self.collate, self.catalog, self.order, self.encoder = cfg, collate, catalog, order, encoder
        self.task, self.pad_id, self.rank, self.world_size, self.seed = task, pad_id, rank, world_size, seed
        self.stored_tokens, self.cost = stored_tokens, cost
        split = cfg.eval
        self.holdout = HoldOut(split.fraction, split.seed) if split is not None and split.fraction > 0 else None
        self.per_rank = per_rank_batch(cfg.global_batch_size, world_size)
        self.position = 0
        """Global samples consumed by all ranks together (the state that matters)."""
        self.steps = 0
        self.stats: Counter[str] = Counter()
        self._it: Any = None
        self.fingerprint = order.fingerprint()
        sizes = catalog.sizes
        self.samples_per_epoch = cfg.samples_per_epoch or sum(sizes[n] for n in order.names)

    # -- iteration --------------------------------------------------------------------------------
    def dataset(self, start_position: int) -> StepDataset:
        return StepDataset(
            order=self.order,
            catalog=self.catalog,
            encoder=self.encoder,
            collate=self.collate,
            task=self.task,
            pad_id=self.pad_id,
            rank=self.rank,
            world_size=self.world_size,
            global_batch=self.cfg.global_batch_size,
            start_position=start_position,
            stored_tokens=self.stored_tokens,
            cost=self.cost,
            holdout=self.holdout,
        )

    def dataloader(self, start_position: int) -> StatefulDataLoader:
        import torch

        workers = self.cfg.num_workers
        # A DataLoader iterator draws its base seed from `generator`, by default the *global* torch RNG:
        # creating one after a resume would shift every later dropout mask. Give it a private one.
        private = torch.Generator().manual_seed(int(worker_generator(self.seed, self.rank, 0, 0).integers(2**62)))
        return StatefulDataLoader(
            self.dataset(start_position),
            batch_size=None,
            collate_fn=_as_is,
            num_workers=workers,
            prefetch_factor=self.cfg.prefetch_factor if workers else None,
            persistent_workers=False,
            worker_init_fn=functools.partial(_init_worker, self.seed, self.rank) if workers else None,
            multiprocessing_context="fork" if workers else None,
            generator=private,
        )

    def __iter__(self) -> XlamLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            self._it = iter(self.dataloader(self.position))
        batch = next(self._it)
        self.position += self.cfg.global_batch_size
        self.steps += 1
        self.stats.update(batch["stats"])
        batch["epoch"] = batch["first_position"] // self.samples_per_epoch
        return batch

    def samples_by_source(self) -> dict[str, int]:
        """Samples drawn from each source by all ranks so far (the realized mixture; a pure function of the
        position, so it is the same on every rank and after any resume)."""
        counts = self.order.plan.drawn_until(self.position)
        return {name: int(c) for name, c in zip(self.order.names, counts, strict=True)}

    def close(self) -> None:
        self._it = None  # drops the DataLoader iterator, which shuts its workers down

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Small, JSON-able state: restore it (any world size) to continue the same global stream."""
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "samples_consumed": self.position,
            "steps_consumed": self.steps,
            "epoch": self.position // self.samples_per_epoch,
            "global_batch_size": self.cfg.global_batch_size,
            "world_size": self.world_size,
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any], *, allow_fingerprint_mismatch: bool = False) -> None:
        """Continue after `state`; ResumeError when it was made with another manifest, weights or seed."""
        if state.get("version") != STATE_VERSION:
            raise ResumeError(f"loader state version {state.get('version')} is not {STATE_VERSION}")
        if state.get("fingerprint") != self.fingerprint and not allow_fingerprint_mismatch:
            raise ResumeError(
                f"loader state was made for another data stream (fingerprint {state.get('fingerprint')}, this run "
                f"{self.fingerprint}: shards, weights, seed, mixture block or shuffle window differ); pass "
                "allow_fingerprint_mismatch / resume: force to continue anyway"
            )
        self.close()
        self.position = int(state["samples_consumed"])
        self.steps = int(state["steps_consumed"])
        self.stats = Counter(state.get("stats", {}))


def check_source_kinds(kinds: dict[str, str], task: str) -> None:
    """Every source must hold the record kind the task trains on (source name → 'trajectory'|'preference')."""
    want = "preference" if task == "dpo" else "trajectory"
    for name, kind in kinds.items():
        if kind != want:
            raise ConfigError(f"source '{name}' holds {kind} records; task '{task}' needs {want} records")


def build_loader(
    cfg: StreamConfig,
    collate: CollateConfig,
    tokenizer: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    task: str = "sft",
) -> XlamLoader:
    """The loader of one rank. Validates weights, kinds and seq_length against the data up front."""
    if task not in ("sft", "dpo"):
        raise ConfigError(f"task must be 'sft' or 'dpo', got '{task}'")
    per_rank_batch(cfg.global_batch_size, world_size)
    catalog = open_catalog(
        cfg.shards,
        skip_bad_shards=cfg.skip_bad_shards,
        index_cache_bytes=cfg.index_cache_mb << 20,
        max_open_files=cfg.max_open_files,
    )
    block = cfg.mixture_block or cfg.global_batch_size
    order = GlobalOrder.build(catalog, cfg.weights, seed, block, cfg.window_shards, weights_default=cfg.weights_default)
    check_source_kinds({name: catalog.kinds[name] for name in order.names}, task)
    encoder = SampleEncoder(tokenizer, collate)
    for name in order.names:  # the part truncation keeps must fit, or every sample would be dropped
        first = catalog.readers[name].record(name, 0)
        prefix = encoder.prefix_length(first)
        if prefix >= collate.seq_length:
            raise ConfigError(
                f"collate.seq_length {collate.seq_length} is smaller than the system+tools prefix of source "
                f"'{name}' ({prefix} tokens in record {first.unique_trajectory_id})"
            )
    fp = render_fingerprint(tokenizer, encoder)
    stored = frozenset(
        name
        for name in order.names
        if (m := catalog.readers[name].manifest).tokenizer and m.tokenizer.get("fingerprint") == fp
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cost = None
    if cfg.balance == "tokens" and world_size > 1:
        fresh = tuple(n for n in order.names if n not in stored)
        # SFT trajectories are truncated to seq_length; prompt_answer records and DPO pairs hold several rows
        cap = collate.seq_length if task == "sft" and collate.mode == "trajectory" else 0
        cost = CostModel(catalog, stored, measure_ratios(catalog, encoder, fresh, task), cap)
    return XlamLoader(
        cfg=cfg,
        collate=collate,
        catalog=catalog,
        order=order,
        encoder=encoder,
        task=task,
        pad_id=pad_id,
        rank=rank,
        world_size=world_size,
        seed=seed,
        stored_tokens=stored,
        cost=cost,
    )

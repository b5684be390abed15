"""Validation loss during training (`data.eval`, `train.eval_interval`).

Token-weighted over all ranks and per source: each rank scores its share (every world_size-th sample of a
source), the loss sums and token counts are summed over ranks, so the result is the mean loss per labelled
token of the whole validation set, whatever the world size. DPO: the mean pair loss. The samples are
encoded and collated once, exactly as training encodes them (same template, truncation and packing), and
kept in host memory (max_samples per source).

Every rank runs the same number of forwards per source (zero-weight fillers on a rank with fewer): under
ZeRO-3 each forward gathers parameters collectively.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from xlam_hpc.collate import collate_dpo, collate_packed, collate_padded
from xlam_hpc.stream.holdout import validation_samples
from xlam_hpc.train.microbatch import filler, split

__all__ = ["Validator"]

log = logging.getLogger("xlam_hpc.train")


def _weight(micro: dict[str, Any], pairs: bool) -> int:
    """Labelled next-token predictions (SFT) or pairs (DPO) of a micro-batch."""
    if pairs:
        return int(micro.get("num_pairs", 0))
    return int((micro["labels"][:, 1:] != -100).sum())


def _empty_batch(pad_id: int, pairs: bool) -> dict[str, Any]:
    """A one-row batch with nothing labelled: the template of a rank's fillers when it holds no sample."""
    ids = torch.full((2 if pairs else 1, 8), pad_id, dtype=torch.long)
    batch = {"input_ids": ids, "labels": torch.full_like(ids, -100), "attention_mask": torch.ones_like(ids)}
    return {**batch, "num_pairs": 0} if pairs else batch


class Validator:
    """This rank's validation micro-batches per source, and the collective pass over them."""

    def __init__(self, run: Any, loader: Any) -> None:
        r = run.recipe
        self.pairs = r.task == "dpo"
        self.world, self.rank, self.device = run.dist.world_size, run.dist.rank, run.coll.device
        started = time.monotonic()
        samples, self._held = validation_samples(
            r.data.eval,
            loader.catalog,
            loader.order.names,
            index_cache_bytes=r.data.index_cache_mb << 20,
            max_open_files=r.data.max_open_files,
        )
        self.sizes = {name: len(items) for name, items in samples.items()}
        self.micros: dict[str, list[dict[str, Any]]] = {}
        self.template = _empty_batch(loader.pad_id, self.pairs)
        for name in sorted(samples):
            mine = samples[name][self.rank :: self.world]
            records = [(f"eval:{name}:{i}", catalog.readers[name].record(name, i)) for catalog, i in mine]
            encode = loader.encoder.encode_dpo if self.pairs else loader.encoder.encode_sft
            encoded = encode(records) if records else []
            if not encoded:
                self.micros[name] = []
                continue
            if self.pairs:
                batch = collate_dpo(encoded, loader.pad_id, r.collate.pad_to_multiple_of)
            elif r.collate.packing:
                batch = collate_packed(encoded, r.collate.seq_length, loader.pad_id)
            else:
                batch = collate_padded(encoded, loader.pad_id, r.collate.pad_to_multiple_of)
            self.micros[name] = split(batch, r.train.micro_batch_tokens, pairs=self.pairs)
        if self.rank == 0:
            log.info("validation: %s samples per source, prepared in %.1f s", self.sizes, time.monotonic() - started)

    def run(self, run: Any, step: int) -> dict[str, Any]:
        """{"loss", "tokens", "by_source": {name: {"loss", "tokens"}}} over all ranks (tokens = pairs for DPO)."""
        from xlam_hpc.train.runtime import all_reduce

        engine, task = run.engine, run.task
        engine.eval()
        started = time.monotonic()
        by_source: dict[str, dict[str, float]] = {}
        total_loss, total_weight = 0.0, 0
        try:
            with torch.no_grad():
                for name, micros in self.micros.items():
                    count = int(all_reduce(len(micros), "max", self.device))
                    loss_sum, weight = 0.0, 0
                    for i in range(count):
                        real = i < len(micros)
                        micro = micros[i] if real else filler(micros[0] if micros else self.template)
                        loss, _ = task.micro_loss(engine, micro, 1.0, step)
                        if real:
                            loss_sum += float(loss)
                            weight += _weight(micro, self.pairs)
                    loss_sum = all_reduce(float(loss_sum), "sum", self.device)
                    weight = int(all_reduce(int(weight), "sum", self.device))
                    if weight:
                        by_source[name] = {"loss": loss_sum / weight, "tokens": weight}
                        total_loss += loss_sum
                        total_weight += weight
        finally:
            engine.train()
        result = {"loss": total_loss / total_weight if total_weight else None, "tokens": total_weight}
        result["by_source"] = by_source
        if self.rank == 0:
            per_source = ", ".join(f"{n} {v['loss']:.4f}" for n, v in by_source.items())
            log.info(
                "step %d validation loss %s over %d %s (%s) in %.1f s",
                step,
                "n/a" if result["loss"] is None else f"{result['loss']:.4f}",
                total_weight,
                "pairs" if self.pairs else "tokens",
                per_source,
                time.monotonic() - started,
            )
        return result

    def close(self) -> None:
        if self._held is not None:
            for reader in set(self._held.readers.values()):
                reader.close()

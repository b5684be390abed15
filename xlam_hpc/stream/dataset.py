"""StepDataset: the per-rank iterable of step batches that torchdata's StatefulDataLoader runs in workers.

Each item is one step's batch for this rank: read the step's samples (one pread each), encode (or use
stored tokens), pack/pad. Everything is a function of the step number, so any worker can make any
step and the dataset's state is two integers (torchdata's per-worker Stateful protocol).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from xlam_hpc.collate import CollateConfig, SampleEncoder, collate_dpo, collate_packed, collate_padded
from xlam_hpc.collate.pretokenize import decode_token_members
from xlam_hpc.stream.catalog import Catalog, GlobalOrder
from xlam_hpc.stream.cost import CostModel
from xlam_hpc.stream.holdout import HoldOut
from xlam_hpc.stream.partition import balance_by_cost, rank_positions, step_positions, steps_of_worker

__all__ = ["StepDataset"]


class StepDataset(IterableDataset):
    """Batches of steps `next_step, next_step + 1, ...` (after global position `start_position`) for one rank."""

    def __init__(
        self,
        *,
        order: GlobalOrder,
        catalog: Catalog,
        encoder: SampleEncoder,
        collate: CollateConfig,
        task: str,
        pad_id: int,
        rank: int,
        world_size: int,
        global_batch: int,
        start_position: int,
        stored_tokens: frozenset[str] = frozenset(),
        cost: CostModel | None = None,
        holdout: HoldOut | None = None,
    ) -> None:
        super().__init__()
        self.order, self.catalog, self.encoder, self.collate = order, catalog, encoder, collate
        self.task, self.pad_id = task, pad_id
        self.rank, self.world_size, self.global_batch = rank, world_size, global_batch
        self.start_position = start_position
        self.stored_tokens = stored_tokens
        """Sources whose shards hold tokens encoded with this run's render fingerprint."""
        self.cost = cost
        """Balance each step's samples over the ranks by these estimated tokens; None = contiguous slices."""
        self.holdout = holdout
        """The validation split: its trajectories are skipped here (counted as `held_out`)."""
        self.next_step = 0

    # torchdata Stateful protocol (called inside each worker)
    def state_dict(self) -> dict[str, int]:
        return {"start_position": self.start_position, "next_step": self.next_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.start_position, self.next_step = int(state["start_position"]), int(state["next_step"])

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in steps_of_worker(worker, workers, self.next_step):
            batch = self.make_batch(step)
            self.next_step = step + workers  # before yield: a snapshot taken now must resume after this step
            yield batch

    def _samples(self, ids: list[tuple[str, int]]) -> list[Any]:
        stored, fresh = {}, []
        split = self.holdout
        for source, index in ids:
            sid = f"{source}:{index}"
            reader = self.catalog.readers[source]
            if source in self.stored_tokens:
                if split is not None and split.excludes(split.trajectory_id(reader, source, index)):
                    self.encoder.stats["held_out"] += 1
                    continue
                raw = reader.read_members(source, index, ("tok.ids", "tok.mask", "tok.len"))
                stored[sid] = decode_token_members(sid, *raw, task=self.task)
            else:
                record = reader.record(source, index)
                if split is not None and split.excludes(record.unique_trajectory_id):
                    self.encoder.stats["held_out"] += 1
                    continue
                fresh.append((sid, record))
        fresh = list(dict(fresh).items())  # a record drawn twice in one step is encoded once, emitted twice
        encoded = self.encoder.encode_sft(fresh) if self.task == "sft" else self.encoder.encode_dpo(fresh)
        wanted = {sid for sid, _ in fresh}
        by_record: dict[str, list[Any]] = {}
        for s in encoded:  # prompt_answer ids are '<sample id>#<turn>'
            base = s.sample_id if s.sample_id in wanted else s.sample_id.rsplit("#", 1)[0]
            by_record.setdefault(base, []).append(s)
        # keep the step's sample order whichever path produced them
        return [
            s for source, index in ids for s in stored.get(f"{source}:{index}", by_record.get(f"{source}:{index}", []))
        ]

    def assignment(self, step: int) -> tuple[list[int], list[tuple[str, int]]]:
        """This rank's global positions (ascending) of the `step`-th step and their (source, index)."""
        if self.cost is None or self.world_size == 1:
            mine = rank_positions(self.start_position, step, self.global_batch, self.world_size, self.rank)
            return list(mine), [self.order.sample_at(p) for p in mine]
        positions = step_positions(self.start_position, step, self.global_batch)
        ids = [self.order.sample_at(p) for p in positions]
        costs = [self.cost.cost(source, index) for source, index in ids]
        mine = balance_by_cost(positions, costs, self.world_size)[self.rank]
        return mine, [ids[p - positions.start] for p in mine]

    def make_batch(self, step: int) -> dict[str, Any]:
        """The batch of the `step`-th step after start_position, for this rank."""
        positions, ids = self.assignment(step)
        before = Counter(self.encoder.stats)
        samples = self._samples(ids)
        if self.task == "dpo":
            batch = collate_dpo(samples, self.pad_id, self.collate.pad_to_multiple_of)
        elif self.collate.packing:
            batch = collate_packed(samples, self.collate.seq_length, self.pad_id)
        else:
            batch = collate_padded(samples, self.pad_id, self.collate.pad_to_multiple_of)
        stats = Counter(self.encoder.stats)
        stats.subtract(before)
        batch.update(
            step=step,
            first_position=positions[0],
            positions=positions,
            rank=self.rank,
            sample_ids=[s.sample_id for s in samples],
            drawn_ids=[f"{s}:{i}" for s, i in ids],
            stats={k: v for k, v in stats.items() if v},
        )
        return batch

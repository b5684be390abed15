"""Split a rank's share of a step into micro-batches of at most `micro_batch_tokens` tokens (rows x width).

Units are rows (SFT) or pairs (DPO: a chosen and a rejected row, kept together). Padded rows are cut to the
longest real row of their micro-batch (right padding: the dropped columns change no real token's output);
packed rows keep their full width. A micro-batch always holds at least one unit, even over the budget.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["filler", "plan", "split"]

IGNORE = -100
_ROW_KEYS = ("input_ids", "labels", "attention_mask", "position_ids")
_ROW_VALUES = ("row_lengths",)  # one value per row (packed: real tokens of the row)


def plan(widths: list[int], budget: int, rows_per_unit: int = 1) -> list[tuple[int, int]]:
    """Consecutive [start, stop) slices of the units, greedily as large as the budget allows: a slice of k
    units of widths w costs k * rows_per_unit * max(w) tokens."""
    slices: list[tuple[int, int]] = []
    start, widest = 0, 0
    for i, w in enumerate(widths):
        wider = max(widest, w)
        if i > start and (i + 1 - start) * rows_per_unit * wider > budget:
            slices.append((start, i))
            start, wider = i, w
        widest = wider
    if start < len(widths):
        slices.append((start, len(widths)))
    return slices


def _widths(batch: dict[str, Any]) -> list[int]:
    """Per row: the columns it needs (padded: its real length; packed: the row width)."""
    if "attention_mask" in batch:
        return [max(int(n), 1) for n in batch["attention_mask"].sum(dim=1)]
    return [batch["input_ids"].shape[1]] * batch["input_ids"].shape[0]


def _take(batch: dict[str, Any], rows: torch.Tensor | slice, width: int) -> dict[str, Any]:
    micro = {k: batch[k][rows, :width] for k in _ROW_KEYS if k in batch}
    micro.update({k: batch[k][rows].clamp(max=width) for k in _ROW_VALUES if k in batch})
    return micro


def split(batch: dict[str, Any], budget: int, *, pairs: bool = False) -> list[dict[str, Any]]:
    """The micro-batches of `batch` (DPO: `pairs`; chosen rows first, then rejected). A DPO batch with no
    pair gives none."""
    widths = _widths(batch)
    if not pairs:
        return [_take(batch, slice(a, b), max(widths[a:b])) for a, b in plan(widths, budget)]
    n = int(batch["num_pairs"])
    pair_widths = [max(widths[i], widths[n + i]) for i in range(n)]
    ids = batch.get("sample_ids") or [None] * n
    out = []
    for a, b in plan(pair_widths, budget, rows_per_unit=2):
        rows = torch.cat([torch.arange(a, b), torch.arange(n + a, n + b)])
        micro = _take(batch, rows, max(pair_widths[a:b]))
        micro.update(num_pairs=b - a, pair_ids=list(ids[a:b]))
        out.append(micro)
    return out


def filler(batch: dict[str, Any], width: int = 8) -> dict[str, Any]:
    """A tiny micro-batch with no labelled token (a rank with fewer micro-batches than another runs these,
    times zero, so that every rank runs the same backwards and ZeRO's collectives match)."""
    micro = _take(batch, slice(0, 1), min(width, batch["input_ids"].shape[1]))
    micro["labels"] = torch.full_like(micro["labels"], IGNORE)
    if "row_lengths" in micro:  # flattened for varlen attention: keep all its columns
        micro["row_lengths"] = torch.full_like(micro["row_lengths"], micro["input_ids"].shape[1])
    if "attention_mask" in micro:  # a fully masked row (a rank whose pairs were all dropped) may give NaN
        micro["attention_mask"] = torch.ones_like(micro["attention_mask"])
    micro.update(num_pairs=0, pair_ids=[], filler=True)
    return micro

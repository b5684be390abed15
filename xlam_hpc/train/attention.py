"""Which attention implementation runs, and how a packed micro-batch reaches it so that packed samples never
attend to each other.

Packed rows hold several samples whose `position_ids` restart at 0 (collate/packing.py). Isolation by backend:
- `eager`, `sdpa`, `flex_attention`: rows as they are, no attention mask, no cache. transformers' mask
  builder (`masking_utils.find_packed_sequence_indices`) turns restarting positions into a block-diagonal
  causal mask per row (eager/sdpa: a dense mask; flex: a document BlockMask that skips masked blocks).
- `flash_attention_2/3/4`: transformers reads sample boundaries from `position_ids` only when the batch has a
  single row, so a multi-row packed batch would run plain causal attention over every row (samples see the
  ones packed before them). Each micro-batch is flattened into one padding-free row and the varlen kernel gets
  the cumulative sequence lengths (`cu_seq_lens_q/k`, `max_length_q/k`: transformers' FlashAttentionKwargs,
  the contract of its own DataCollatorWithFlattening). No padding token is computed at all.
Anything else (a hub kernel, paged attention) is refused when packing is on: it is not known to isolate.

`auto` picks the fast isolating path: on CUDA the installed varlen flash kernel (FA3 on Hopper, else FA2),
else `flex_attention` when packing (sdpa with a dense packed mask leaves its flash kernel), else `sdpa`; on CPU
`sdpa`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from xlam_hpc.errors import ConfigError

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "VARLEN",
    "VARLEN_KWARGS",
    "check_attention",
    "flatten_packed",
    "resolve_attention",
]

MASKED = ("eager", "sdpa", "flex_attention")
VARLEN = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
ATTENTION_IMPLEMENTATIONS = ("auto", *MASKED, *VARLEN)
VARLEN_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def check_attention(implementation: str, *, packing: bool) -> None:
    """ConfigError for an implementation that cannot isolate packed samples (or is not known at all)."""
    if implementation in ATTENTION_IMPLEMENTATIONS:
        return
    if packing:
        raise ConfigError(
            f"model.attn_implementation '{implementation}' is not known to keep packed samples apart; with "
            f"collate.packing on use one of {', '.join(ATTENTION_IMPLEMENTATIONS)} (or set collate.packing: false)"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_attention(implementation: str, *, packing: bool, cuda_capability: tuple[int, int] | None) -> str:
    """The implementation to build the model with (`auto` resolved; see the module docstring).
    `cuda_capability`: the GPU's (major, minor), None on CPU."""
    check_attention(implementation, packing=packing)
    if implementation == "flex_attention" and cuda_capability is None:
        raise ConfigError("model.attn_implementation flex_attention has no backward on CPU (torch); use sdpa or eager")
    if implementation != "auto":
        return implementation
    if cuda_capability is None:
        return "sdpa"
    if cuda_capability[0] == 9 and _installed("flash_attn_interface"):
        return "flash_attention_3"
    if _installed("flash_attn"):
        return "flash_attention_2"
    return "flex_attention" if packing else "sdpa"


def flatten_packed(micro: dict[str, Any]) -> dict[str, Any]:
    """A packed micro-batch ([rows, width] with `row_lengths`) as one padding-free row [1, tokens] plus the
    varlen kernels' cumulative sequence lengths. Labels are flattened alike; the first token of every sample
    is unlabelled, so no position predicts across a boundary."""
    import torch

    lengths = micro["row_lengths"].tolist()
    if not any(lengths):  # a rank whose samples were all dropped: one unlabelled pad token, not an empty row
        lengths[0] = 1
    keep = [slice(0, n) for n in lengths]
    ids = torch.cat([micro["input_ids"][r, s] for r, s in enumerate(keep)])[None]
    pos = torch.cat([micro["position_ids"][r, s] for r, s in enumerate(keep)])[None]
    labels = torch.cat([micro["labels"][r, s] for r, s in enumerate(keep)])[None].clone()
    starts = (pos[0] == 0).nonzero().flatten()
    labels[0, starts] = -100
    cu = torch.cat([starts, torch.tensor([ids.shape[1]])]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max()) if len(cu) > 1 else 0
    return {
        **{k: v for k, v in micro.items() if k not in ("input_ids", "position_ids", "labels", "row_lengths")},
        "input_ids": ids,
        "position_ids": pos,
        "labels": labels,
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }

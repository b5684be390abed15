"""CollateConfig: how records become token ids, loss masks and packed batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CollateConfig"]


@dataclass(kw_only=True)
class CollateConfig:
    """Recipe section `collate:`."""

    seq_length: int = 4096
    """Maximum tokens of one sample, and the row length of packed batches."""
    mode: Literal["trajectory", "prompt_answer"] = "trajectory"
    """trajectory: one sample per record, every assistant turn trained. prompt_answer: one sample per
    trained assistant turn (the conversation up to it, only that turn trained) — xLAM's return_type."""
    loss_on: Literal["all", "last"] = "all"
    """Train every assistant turn, or only the last one of each sample."""
    overflow: Literal["truncate", "drop"] = "truncate"
    """Over-long samples: drop whole leading turns (keeping system prompt and tools), or drop the sample."""
    packing: bool = True
    """Best-fit-decreasing packing of each step's samples into rows of seq_length (position_ids restart per
    sample); False pads every sample to the longest in the step."""
    chat_template: str = "tokenizer"
    """'tokenizer' (the model's own template, read from the tokenizer folder; error if it has none),
    'builtin' (xlam-hpc's Mistral-style template with tools), or a path to a Jinja file. Assistant spans come
    from {% generation %} blocks when the template has them, else from prefix renderings (docs/your-own-model.md)."""
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra variables for the template, as `apply_chat_template(**kwargs)` passes them: e.g. `date_string`
    for Llama 3.2 (which otherwise writes today's date), `enable_thinking` for Qwen3."""
    tool_arguments: Literal["object", "json_string"] = "object"
    """Tool-call arguments as a JSON object (what HF templates expect) or a JSON string (templates that print
    `arguments` verbatim)."""
    tool_call_ids: Literal["keep", "alnum9"] = "keep"
    """Tool call ids as in the data, or rewritten to 9 alphanumeric characters derived from them (Mistral
    templates, e.g. Mistral Nemo's, refuse any other shape; the call and its result keep matching ids)."""
    pad_to_multiple_of: int = 8

    def __post_init__(self) -> None:
        if self.seq_length < 16:
            raise ValueError(f"collate.seq_length must be >= 16, got {self.seq_length}")
        if self.pad_to_multiple_of < 1:
            raise ValueError("collate.pad_to_multiple_of must be >= 1")

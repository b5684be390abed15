"""What one evaluation question is (`EvalItem`), whatever it comes from (unified data or a benchmark)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EvalItem"]


@dataclass
class EvalItem:
    """One question: the conversation prefix a model answers, and what a correct answer is."""

    id: str
    source: str
    """Dataset source, or the bench name (e.g. 'bfcl-simple')."""
    category: str
    kind: Literal["call", "irrelevance"]
    """'call': the answer calls tools; 'irrelevance': the right answer calls none."""
    system: str
    tools: list[dict[str, Any]]
    """OpenAI function specs {name, description, parameters} (JSON-schema types), as chat templates take them."""
    messages: list[dict[str, Any]]
    """The conversation prefix in the unified/OpenAI layout the collate chat templates render."""
    gold: list[dict[str, Any]]
    """Expected calls {"name", "arguments"}; [] for irrelevance."""
    possible_answer: list[dict[str, Any]] | None = None
    """BFCL ground truth [{func_name: {param: [allowed values]}}]; None for unified data."""
    functions: list[dict[str, Any]] | None = field(default=None)
    """BFCL's original function docs (BFCL type names), which its AST checker reads; None for unified data."""

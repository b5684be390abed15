"""JSON Schema of the format (published in docs/schema/) and ActionStudio's nested layout."""

from __future__ import annotations

from typing import Any

import msgspec

from xlam_hpc.schema.types import SCHEMA_VERSION, Preference, Trajectory

__all__ = ["json_schema", "to_actionstudio"]


def json_schema(kind: str) -> dict[str, Any]:
    """JSON Schema (2020-12) for 'trajectory' or 'preference' records, generated from the types."""
    tp = {"trajectory": Trajectory, "preference": Preference}[kind]
    schema = msgspec.json.schema(tp)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$comment"] = f"xlam-hpc unified {kind} record, schema version {SCHEMA_VERSION}. Generated: make schema."
    return schema


def _turn_to_actionstudio(turn: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in turn.items() if k not in ("tool_calls", "reasoning")}
    if turn.get("reasoning"):  # ActionStudio has no reasoning field: the thought leads the content, as before
        out["content"] = "\n\n".join(s for s in (turn["reasoning"], turn.get("content", "")) if s)
    if turn.get("tool_calls"):
        out["tool_calls"] = [
            {"type": "function", "id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in turn["tool_calls"]
        ]
    return out


def to_actionstudio(rec: Trajectory | Preference) -> dict[str, Any]:
    """The record in ActionStudio's layout: tools and tool_calls nested under `function`; a turn's `reasoning`
    is written before its `content` (blank line between), as non-reasoning chat templates render it."""
    data = msgspec.to_builtins(rec)
    data["tools"] = [{"type": "function", "function": t} for t in data["tools"]]
    data["conversation"] = [_turn_to_actionstudio(t) for t in data["conversation"]]
    for side in ("chosen", "rejected"):
        if side in data:
            data[side] = _turn_to_actionstudio(data[side])
    return data

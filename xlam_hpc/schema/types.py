"""The unified trajectory format: the one record type every converter emits and the loader reads.

Field names follow xLAM ActionStudio's unified records (`unique_trajectory_id`, `task_instruction`,
`tools`, `conversation` with `tool_calls` and `tool` turns); `to_actionstudio()` in
`xlam_hpc.schema.export` writes ActionStudio's nested OpenAI layout for tools that want it.

msgspec was chosen over pydantic v2 by measurement (bench/validate.py): typed decoding straight from
JSON bytes is several times faster, which matters at 100k+ records per conversion.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "FunctionSpec",
    "Preference",
    "Role",
    "ToolCall",
    "Trajectory",
    "Turn",
]

SCHEMA_VERSION = "1"

Role = Literal["user", "assistant", "tool"]


class FunctionSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An OpenAI-style function the agent may call."""

    name: str
    """Function name; tool calls must use one of these names when `tools` is non-empty."""
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON Schema of the arguments object."""


class ToolCall(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One function call made by the assistant."""

    id: str
    """Unique within the trajectory; answered by the tool turn with the same `tool_call_id`."""
    name: str
    arguments: dict[str, Any] | str = msgspec.field(default_factory=dict)
    """An object. A JSON string is accepted on input and parsed by `validate_*`; invalid JSON is rejected."""


class Turn(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One conversation turn.

    user: `content`. assistant: `content` (the answer, or a thought for sources that do not mark thoughts),
    optional `reasoning` (the thought, kept apart from the answer) and/or `tool_calls`.
    tool: `tool_call_id`, `name`, `content` (the observation).
    """

    role: Role
    content: str = ""
    reasoning: str = ""
    """Assistant only: the thought before the answer/calls (ReAct `Thought:`, LLaMA-Factory `reasoning` parts).
    Chat templates that read `reasoning_content` (Qwen3) render it in their thinking block; for the others
    it is written before `content`, separated by a blank line, as converters wrote it into `content` before
    the field existed. Left out of the JSON when empty, so records without reasoning are unchanged."""
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    train: bool = True
    """False excludes an assistant turn from the loss (e.g. AgentInstruct `loss: false`, in-context demos)."""


class Trajectory(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole agent trajectory (SFT)."""

    unique_trajectory_id: str
    source: str
    """Dataset/environment name; shards and the mixture are keyed by it."""
    task_instruction: str = ""
    """System-level instruction (rendered as the system prompt)."""
    tools: list[FunctionSpec] = msgspec.field(default_factory=list)
    conversation: list[Turn]
    score: float | None = None
    """Quality rating (e.g. 0-5; higher is better); `convert --min-score` filters on it."""
    split: str | None = None
    meta: dict[str, Any] = msgspec.field(default_factory=dict)


class Preference(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A DPO pair: a shared prompt (tools + conversation prefix) and two assistant continuations."""

    unique_trajectory_id: str
    source: str
    task_instruction: str = ""
    tools: list[FunctionSpec] = msgspec.field(default_factory=list)
    conversation: list[Turn]
    """The prompt: ends with a user or tool turn."""
    chosen: Turn
    rejected: Turn
    score: float | None = None
    split: str | None = None
    meta: dict[str, Any] = msgspec.field(default_factory=dict)

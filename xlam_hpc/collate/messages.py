"""Unified records → the message and tool dicts Hugging Face chat templates read.

The shapes are the ones `tokenizer.apply_chat_template(messages, tools=...)` documents: OpenAI-style
`tool_calls` with `{"type": "function", "function": {"name", "arguments"}}`, tool results as
`{"role": "tool", "tool_call_id", "name", "content"}`, tools as `{"type": "function", "function": {...}}`.
Keys without a value are left out, not set to None: templates test `'tool_calls' in message` (Llama 3.1),
`message.tool_calls is defined` (Mistral, Hermes), and transformers drops None-valued keys the same way.

Reasoning (`Turn.reasoning`): a template that reads `reasoning_content` (Qwen3, DeepSeek-R1 style; see
`supports_reasoning`) gets it in that key and renders its thinking block; every other template (Llama,
Qwen2.5, Hermes, Mistral, the builtin one) gets `assistant_text`: the reasoning, a blank line, then the
content, which is what the converters wrote into `content` before the field existed, so their renderings
and trainings are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from xlam_hpc.schema import FunctionSpec, Turn

__all__ = [
    "ReasoningStyle",
    "ToolArguments",
    "ToolCallIds",
    "assistant_text",
    "reasoning_style",
    "supports_reasoning",
    "to_hf_messages",
    "tools_json",
]

ToolArguments = Literal["object", "json_string"]
ToolCallIds = Literal["keep", "alnum9"]
ReasoningStyle = Literal["content", "field"]
"""'field': reasoning in `reasoning_content`; 'content': written before the content (`assistant_text`)."""
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def alnum9(call_id: str) -> str:
    """A 9-character alphanumeric id derived from `call_id` (Mistral templates and vLLM's Mistral parser
    require that shape): stable, so a call and the tool result answering it keep matching ids."""
    n = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, len(_ALNUM))
        out.append(_ALNUM[r])
    return "".join(out)


def supports_reasoning(template: str) -> bool:
    """Whether a Jinja chat template renders a message's `reasoning_content` (Qwen3 does)."""
    return "reasoning_content" in template


def reasoning_style(templates: str | dict[str, str] | None) -> ReasoningStyle:
    """How `Turn.reasoning` reaches a tokenizer's chat template(s) (one string, or a dict of named templates):
    in `reasoning_content` when one renders it, else before the content. Training and eval both use this."""
    found = templates.values() if isinstance(templates, dict) else [templates or ""]
    return "field" if any(supports_reasoning(t) for t in found) else "content"


def assistant_text(turn: Turn) -> str:
    """An assistant turn's text for templates without a reasoning slot: reasoning, blank line, content."""
    if not turn.reasoning:
        return turn.content
    return f"{turn.reasoning}\n\n{turn.content}" if turn.content else turn.reasoning


def _arguments(value: dict[str, Any] | str, style: ToolArguments) -> dict[str, Any] | str:
    if style == "json_string" and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return value


def to_hf_messages(
    system: str,
    turns: list[Turn],
    arguments: ToolArguments = "object",
    call_ids: ToolCallIds = "keep",
    reasoning: ReasoningStyle = "content",
) -> list[dict[str, Any]]:
    """Unified turns → the OpenAI/HF message dicts chat templates expect (system message first, if any)."""
    ident = alnum9 if call_ids == "alnum9" else str
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for t in turns:
        if t.role == "assistant":
            if reasoning == "field":
                msg: dict[str, Any] = {"role": "assistant", "content": t.content}
                if t.reasoning:
                    msg["reasoning_content"] = t.reasoning
            else:
                msg = {"role": "assistant", "content": assistant_text(t)}
            if t.tool_calls:
                msg["tool_calls"] = [
                    {
                        "id": ident(c.id),
                        "type": "function",
                        "function": {"name": c.name, "arguments": _arguments(c.arguments, arguments)},
                    }
                    for c in t.tool_calls
                ]
            out.append(msg)
        elif t.role == "tool":
            msg = {"role": "tool", "content": t.content}
            if t.tool_call_id is not None:
                msg["tool_call_id"] = ident(t.tool_call_id)
            if t.name is not None:
                msg["name"] = t.name
            out.append(msg)
        else:
            out.append({"role": "user", "content": t.content})
    return out


def tools_json(tools: list[FunctionSpec]) -> list[dict[str, Any]]:
    """The record's functions in the OpenAI tool shape."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]

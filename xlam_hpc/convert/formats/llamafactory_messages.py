"""LLaMA-Factory v1 typed-part messages
(https://github.com/hiyouga/LLaMA-Factory, e.g. data/reason_tool_use_demo_50.jsonl).

Layout: `{"messages": [{"role": system|user|assistant|tool, "content": [{"type": text|reasoning|tool_call,
"value": str}], "loss_weight"?: 0.0|1.0}], "tools": "<JSON string: [{type: function, function: {...}}]>"}`.
- `reasoning` parts are the thought → assistant `reasoning` (joined by a blank line), `text` parts → `content`
  (a message with reasoning only keeps it as `content`: a thought alone is the reply);
- `tool_call` parts hold `{"name", "arguments"}` JSON → `tool_calls` (ids `call_<turn>_<k>`: the source
  has none);
- tool messages answer the preceding calls in order; one tool message holding a JSON list of
  `{tool_call_id?, name, content}` results, one per call, is split into one tool turn per call;
- `loss_weight: 0` → `train=False`; legacy `parameters.type: "dict"` / Python type names → JSON schema;
- an assistant text message followed by an assistant message holding only tool_call parts is one turn;
- tools from `tools`, `functions` or `available_tools`; with none, tools inferred from the calls
  (`meta["tools_inferred"]`); episode outcome `score`/`reward`/`success`/`win` → `score`
  (common.outcome_score); KTO records (a boolean `label`) are rejected (`kto_unsupported`).
`convert_messages` is shared with the v1 DPO converter (`chosen_messages` / `rejected_messages`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, Reject, ToolCall, Trajectory, Turn, parse_json_field, record_id, require
from xlam_hpc.convert.common import (
    ToolResults,
    call_id,
    merge_call_turn,
    outcome_score,
    parse_arguments,
    record_tools,
    reject_kto,
)
from xlam_hpc.convert.reader import RawRecord

__all__ = ["LlamaFactoryMessages", "convert_messages"]


def _parts(msg: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    content = msg.get("content")
    if isinstance(content, str):
        return [("text", content)]
    if not isinstance(content, list):
        raise Reject("wrong_type", f"{where}: content should be a list of typed parts")
    parts = []
    for k, part in enumerate(content):
        if not isinstance(part, Mapping) or not isinstance(part.get("value"), str):
            raise Reject("bad_part", f"{where}: part {k} has no string 'value'")
        kind = part.get("type", "text")
        if kind not in ("text", "reasoning", "tool_call"):
            raise Reject("unsupported_part", f"{where}: part {k} of type '{kind}' is not supported")
        parts.append((kind, part["value"]))
    return parts


def _assistant(parts: list[tuple[str, str]], turn_idx: int, train: bool, where: str) -> Turn:
    reasoning = "\n\n".join(v.strip() for k, v in parts if k == "reasoning" and v.strip())
    text = "".join(v for k, v in parts if k == "text")
    calls = []
    for k, value in enumerate(v for kind, v in parts if kind == "tool_call"):
        call = parse_json_field(value, f"{where} tool_call {k}")
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise Reject("bad_tool_call", f"{where}: tool_call {k} has no 'name'")
        args = parse_arguments(call.get("arguments"), f"{where} tool_call {k}")
        calls.append(ToolCall(id=call_id(turn_idx, k), name=call["name"], arguments=args))
    if not text.strip() and not calls:  # a thought alone is the turn's reply, as before the reasoning field
        return Turn(role="assistant", content=reasoning, train=train)
    return Turn(role="assistant", content=text.strip() and text, reasoning=reasoning, tool_calls=calls, train=train)


def convert_messages(messages: Any, label: str = "messages") -> tuple[str, list[Turn]]:
    """(system prompt, turns) of a v1 message list."""
    if not isinstance(messages, list):
        raise Reject("wrong_type", f"'{label}' should be a list of messages")
    system = ""
    turns: list[Turn] = []
    results = ToolResults(turns)
    for i, msg in enumerate(messages):
        where = f"{label}[{i}]"
        role = require(msg, "role", str)
        parts = _parts(msg, where)
        if role == "tool":
            if not results.calls:
                raise Reject("unmatched_tool_turn", f"{where}: tool message without a preceding tool call")
            results.texts.append("".join(v for _, v in parts))
            continue
        results.flush(where)
        if role == "system":
            if turns or system:
                raise Reject("late_system_turn", f"{where}: system message after the conversation started")
            system = "".join(v for _, v in parts)
        elif role == "user":
            turns.append(Turn(role="user", content="".join(v for _, v in parts)))
        elif role == "assistant":
            prev_text = bool(turns) and turns[-1].role == "assistant" and not turns[-1].tool_calls
            turn = _assistant(parts, len(turns) - prev_text, msg.get("loss_weight", 1.0) != 0, where)
            if not merge_call_turn(turns, turn):  # a text message then one that only calls: one turn
                turns.append(turn)
            results.calls.extend(turn.tool_calls)
        else:
            raise Reject("unknown_role", f"{where}: unknown role '{role}'")
    results.flush(f"{label}[{len(messages)}]")
    return system, turns


def _is_v1_messages(msgs: Any) -> bool:
    return (
        isinstance(msgs, list)
        and bool(msgs)
        and all(isinstance(m, Mapping) and isinstance(m.get("content"), list) for m in msgs)
        and any(isinstance(p, Mapping) and "value" in p and "type" in p for m in msgs for p in m["content"])
    )


class LlamaFactoryMessages(Converter):
    name = "llamafactory-messages"
    description = "LLaMA-Factory v1 messages with typed parts (text/reasoning/tool_call) and loss_weight"
    default_source = "llamafactory-messages"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        return 0.9 if isinstance(obj, Mapping) and _is_v1_messages(obj.get("messages")) else 0.0

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        reject_kto(obj)
        system, turns = convert_messages(require(obj, "messages", list))
        meta: dict[str, Any] = {}
        tools = record_tools(obj, turns, meta)
        score = outcome_score(obj, meta)
        source = self.source_for(raw)
        return [
            Trajectory(
                unique_trajectory_id=record_id(source, raw),
                source=source,
                task_instruction=system,
                tools=tools,
                conversation=turns,
                score=score,
                meta=meta,
            )
        ]

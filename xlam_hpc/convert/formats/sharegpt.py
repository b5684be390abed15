"""ShareGPT chats, including LLaMA-Factory's function-calling roles
(https://github.com/hiyouga/LLaMA-Factory/blob/main/data/README.md, e.g. data/glaive_toolcall_en_demo.json).

Layout: `{"conversations": [{"from": system|human|user|gpt|assistant|function_call|observation|tool,
"value": str}], "tools"?: "<JSON string: [{name, description, parameters}]>", "system"?: str}`.
- `function_call` values are JSON `{"name", "arguments"}` (or a list of them: parallel calls). A
  function_call right after a gpt turn joins that assistant turn (the gpt text is the thought);
  consecutive function_call turns are parallel calls of one assistant turn.
- `observation`/`tool` turns answer the pending calls in order (LLaMA-Factory puts parallel results in
  one observation as a JSON list; that list is split per call).
- tools from `tools`, `functions` or `available_tools`; with none, tools inferred from the calls
  (`meta["tools_inferred"]`); episode outcome `score`/`reward`/`success`/`win` → `score`
  (common.outcome_score); KTO records (a boolean `label`) are rejected (`kto_unsupported`).
`conversations_to_turns` is shared with the LLaMA-Factory DPO converter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, Reject, ToolCall, Trajectory, Turn, parse_json_field, record_id, require
from xlam_hpc.convert.common import (
    ToolResults,
    call_id,
    is_chat,
    outcome_score,
    parse_arguments,
    record_tools,
    reject_kto,
    top_level_system,
)
from xlam_hpc.convert.reader import RawRecord

__all__ = ["ShareGPT", "conversations_to_turns"]

_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant"}
_OBSERVATION = {"observation", "tool"}
_ROLES = {"system", "function_call", *_USER, *_ASSISTANT, *_OBSERVATION}
_HERMES_TAGS = ("<tool_call>", "<tools>", "<tool_response>", "<schema>")


def _calls(value: str, turn_idx: int, first_k: int, where: str) -> list[ToolCall]:
    data = parse_json_field(value, f"{where} function_call")
    items = data if isinstance(data, list) else [data]
    calls = []
    for j, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise Reject("bad_tool_call", f"{where}: function_call without a 'name'")
        args = parse_arguments(item.get("arguments"), f"{where} function_call '{item['name']}'")
        calls.append(ToolCall(id=call_id(turn_idx, first_k + j), name=item["name"], arguments=args))
    return calls


def conversations_to_turns(convs: Any, label: str = "conversations") -> tuple[str, list[Turn]]:
    """(system prompt, turns) of a ShareGPT `conversations` list."""
    if not isinstance(convs, list):
        raise Reject("wrong_type", f"'{label}' should be a list of turns")
    system = ""
    turns: list[Turn] = []
    results = ToolResults(turns)  # calls of the current assistant turn not answered yet, their observations
    for i, item in enumerate(convs):
        where = f"{label}[{i}]"
        role = require(item, "from", str)
        value = require(item, "value", str)
        if role in _OBSERVATION:
            if not results.calls:
                raise Reject("unmatched_tool_turn", f"{where}: {role} turn without a pending function_call")
            results.texts.append(value)
            continue
        if role == "function_call":
            prev = turns[-1] if turns else None
            # Observations are buffered until the next non-observation turn, so an assistant last turn with
            # none buffered is either a gpt text turn (its thought) or one whose calls are still pending.
            if prev is not None and prev.role == "assistant" and not results.texts:
                new = _calls(value, len(turns) - 1, len(prev.tool_calls), where)
                prev.tool_calls.extend(new)
                results.calls.extend(new)
                continue
            results.flush(where)
            turn = Turn(role="assistant", tool_calls=_calls(value, len(turns), 0, where))
            turns.append(turn)
            results.calls.extend(turn.tool_calls)
            continue
        results.flush(where)
        if role == "system":
            if turns or system:
                raise Reject("late_system_turn", f"{where}: system turn after the conversation started")
            system = value
        elif role in _USER:
            turns.append(Turn(role="user", content=value))
        elif role in _ASSISTANT:
            turns.append(Turn(role="assistant", content=value))
        else:
            raise Reject("unknown_role", f"{where}: unknown role '{role}'")
    results.flush(f"{label}[{len(convs)}]")
    return system, turns


class ShareGPT(Converter):
    name = "sharegpt"
    description = "ShareGPT from/value chats incl. LLaMA-Factory function_call/observation turns and tools"
    default_source = "sharegpt"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping) or "chosen" in obj or "rejected" in obj:
            return 0.0
        convs = obj.get("conversations")
        if not is_chat(convs, "from", "value"):
            return 0.0
        roles = {t["from"] for t in convs}
        if not roles <= _ROLES:
            return 0.1
        if any(isinstance(t["value"], str) and tag in t["value"] for t in convs for tag in _HERMES_TAGS):
            return 0.1  # Hermes function-calling: its own converter
        if isinstance(obj.get("label"), bool):
            return 0.6  # KTO unpaired preference: claimed here to be rejected
        if roles & {"function_call", "observation"} or "tools" in obj:
            return 0.9
        return 0.4  # generic chats (AgentInstruct, ETO...) belong to environment-specific converters

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        reject_kto(obj)
        system, turns = conversations_to_turns(require(obj, "conversations", list))
        meta: dict[str, Any] = {}
        tools = record_tools(obj, turns, meta)
        score = outcome_score(obj, meta)
        source = self.source_for(raw)
        return [
            Trajectory(
                unique_trajectory_id=record_id(source, raw),
                source=source,
                task_instruction=top_level_system(obj, system),
                tools=tools,
                conversation=turns,
                score=score,
                meta=meta,
            )
        ]

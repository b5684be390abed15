"""OpenAI chat-completions / fine-tuning records (https://platform.openai.com/docs/guides/fine-tuning).

Layout: `{"messages": [...], "tools"?: [{type: function, function: {...}}], "functions"?: [...]}` with
- assistant `tool_calls: [{id, type: function, function: {name, arguments: "<JSON string>"}}]` answered by
  `{"role": "tool", "tool_call_id", "content"}` messages;
- legacy `function_call: {name, arguments}` answered by `{"role": "function", "name", "content"}`;
- optional `weight: 0` on assistant messages (not trained).
`messages_to_turns` is shared with the TRL preference converter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, Reject, ToolCall, Trajectory, Turn, record_id, require, tool_from_openai
from xlam_hpc.convert.common import is_chat, openai_call, take_pending, tool_turn
from xlam_hpc.convert.reader import RawRecord

__all__ = ["OpenAIMessages", "content_text", "messages_to_turns"]

_CHAT_ROLES = {"system", "developer", "user", "assistant"}
_TOOL_ROLES = {"tool", "function"}


def content_text(content: Any, where: str) -> str:
    """Message content as text: a string, null, or a list of `{type: text, text}` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise Reject("unsupported_content", f"{where}: content part of type '{kind}' is not text")
        return "".join(texts)
    raise Reject("wrong_type", f"{where}: content should be a string or a list of parts")


def _calls(msg: Mapping[str, Any], turn_idx: int, where: str) -> list[ToolCall]:
    raw_calls = msg.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise Reject("wrong_type", f"{where}: tool_calls should be a list")
    if msg.get("function_call"):  # legacy single call, no id
        raw_calls = [*raw_calls, {"function": msg["function_call"]}]
    return [openai_call(call, turn_idx, k, where) for k, call in enumerate(raw_calls)]


def messages_to_turns(messages: Any, *, label: str = "messages") -> tuple[str, list[Turn]]:
    """(system prompt, turns) of an OpenAI message list. Only a leading system/developer message is the
    instruction; a later one rejects (`late_system_turn`) rather than being silently re-ordered."""
    if not isinstance(messages, list):
        raise Reject("wrong_type", f"'{label}' should be a list of messages")
    system: list[str] = []
    turns: list[Turn] = []
    pending: list[ToolCall] = []  # calls of the last assistant turn not answered yet
    for i, msg in enumerate(messages):
        where = f"{label}[{i}]"
        role = require(msg, "role", str)
        if role in ("system", "developer"):
            if turns:
                raise Reject("late_system_turn", f"{where}: system message after the conversation started")
            system.append(content_text(msg.get("content"), where))
            continue
        text = content_text(msg.get("content"), where)
        if role == "user":
            turns.append(Turn(role="user", content=text))
        elif role == "assistant":
            calls = _calls(msg, len(turns), where)
            train = msg.get("weight", 1) != 0
            turns.append(Turn(role="assistant", content=text, tool_calls=calls, train=train))
            pending = list(calls)
        elif role == "tool":
            cid = msg.get("tool_call_id")
            if cid is None and len(pending) >= 1:  # some exports drop the id; answer in call order
                cid = pending[0].id
            pending = [c for c in pending if c.id != cid]
            turns.append(Turn(role="tool", content=text, tool_call_id=cid, name=msg.get("name")))
        elif role == "function":
            match = take_pending(pending, msg.get("name"))
            if match is None:
                raise Reject("unmatched_tool_turn", f"{where}: function result without a pending function_call")
            turns.append(tool_turn(match, text))
        else:
            raise Reject("unknown_role", f"{where}: unknown role '{role}'")
    return "\n\n".join(system), turns


class OpenAIMessages(Converter):
    name = "openai"
    description = "OpenAI chat messages with tool_calls/tool (or legacy function_call/function) turns"
    default_source = "openai-messages"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping):
            return 0.0
        msgs = obj.get("messages")
        if not is_chat(msgs, "role"):
            return 0.0
        for m in msgs:  # LLaMA-Factory v1 typed parts use `value`, not `text`
            content = m.get("content")
            if isinstance(content, list) and any(isinstance(p, Mapping) and "value" in p for p in content):
                return 0.0
        roles = {m["role"] for m in msgs}
        if not roles <= _CHAT_ROLES | _TOOL_ROLES:
            return 0.0
        if "tools" in obj or "functions" in obj or roles & _TOOL_ROLES:
            return 0.9
        if any(m.get("tool_calls") or m.get("function_call") for m in msgs):
            return 0.9
        if isinstance(obj.get("label"), bool):  # KTO unpaired preference, not SFT
            return 0.1
        # Plain chats: a text-ReAct converter (observations as user turns) should win these.
        react = any(
            isinstance(m.get("content"), str) and "Action:" in m["content"] for m in msgs if m["role"] == "assistant"
        )
        return 0.2 if react else 0.4

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        system, turns = messages_to_turns(require(obj, "messages", list))
        specs = obj.get("tools") or obj.get("functions") or []
        if not isinstance(specs, list):
            raise Reject("wrong_type", "'tools' should be a list")
        source = self.source_for(raw)
        split = obj.get("split") if isinstance(obj.get("split"), str) else None
        return [
            Trajectory(
                unique_trajectory_id=record_id(source, raw),
                source=source,
                task_instruction=system,
                tools=[tool_from_openai(t) for t in specs],
                conversation=turns,
                split=split,
            )
        ]

"""OpenAI chat-completions / fine-tuning records (https://platform.openai.com/docs/guides/fine-tuning),
and OpenAI-style agent traces that keep the messages under another key.

Layout: `{"messages": [...], "tools"?: [{type: function, function: {...}}], "functions"?: [...]}` with
- the messages under `messages`, or any top-level key holding a list of `{role, content}` objects
  (`conversations`, `traj`, `dialog`, ...; `messages` first, `--messages-key` to choose);
- assistant `tool_calls: [{id, type: function, function: {name, arguments: "<JSON string>"}}]` answered by
  `{"role": "tool", "tool_call_id", "content"}` messages;
- legacy `function_call: {name, arguments}` answered by `{"role": "function", "name", "content"}`;
- optional `weight: 0` on assistant messages (not trained);
- tools from `tools`, `functions` or `available_tools` (a list or a JSON string); with none, tools inferred
  from the calls (`meta["tools_inferred"]`);
- an assistant text message followed by an assistant message that only calls tools (OpenAI/MCP traces)
  is one assistant turn; a call id reused by a later assistant message, its earlier call answered, is
  renumbered `<id>_<n>` (`meta["call_ids_renumbered"]`: new id → original);
- episode outcome `score`/`reward`/`success`/`win` → `score` (common.outcome_score; originals in meta);
- KTO records (a boolean `label`: one completion marked good or bad) are rejected (`kto_unsupported`).
`messages_to_turns` is shared with the TRL preference converter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, Reject, ToolCall, Trajectory, Turn, record_id, require, tool_from_openai
from xlam_hpc.convert.common import (
    TOOL_KEYS,
    merge_call_turn,
    messages_key,
    openai_call,
    outcome_score,
    record_tools,
    reject_kto,
    take_pending,
    tool_turn,
)
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
            prev_text = bool(turns) and turns[-1].role == "assistant" and not turns[-1].tool_calls
            calls = _calls(msg, len(turns) - 1 if prev_text else len(turns), where)
            turn = Turn(role="assistant", content=text, tool_calls=calls, train=msg.get("weight", 1) != 0)
            if not merge_call_turn(turns, turn):  # a text message then one that only calls: one turn
                turns.append(turn)
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


def renumber_call_ids(turns: list[Turn], meta: dict[str, Any]) -> None:
    """Give a call id reused by a later assistant turn a fresh id ('<id>_<n>'), with the tool turns that
    answer it, when the pairing is unambiguous: the earlier call with that id is answered and the id is
    used once in its own turn. `meta["call_ids_renumbered"]` maps each new id to the original. Other
    reuse is left as is: the schema check rejects it (`duplicate_call_id`)."""
    seen: set[str] = set()
    pending: set[str] = set()
    alias: dict[str, str] = {}  # original id → new id, for the tool turns of the current assistant turn
    renamed: dict[str, str] = {}
    for turn in turns:
        if turn.role == "assistant":
            alias = {}
            ids = [c.id for c in turn.tool_calls]
            for call in turn.tool_calls:
                if call.id in seen and call.id not in pending and ids.count(call.id) == 1:
                    n = 1
                    while f"{call.id}_{n}" in seen or f"{call.id}_{n}" in ids:
                        n += 1
                    alias[call.id] = f"{call.id}_{n}"
                    renamed[alias[call.id]] = call.id
                    call.id = alias[call.id]
                seen.add(call.id)
                pending.add(call.id)
        elif turn.role == "tool" and turn.tool_call_id is not None:
            turn.tool_call_id = alias.get(turn.tool_call_id, turn.tool_call_id)
            pending.discard(turn.tool_call_id)
    if renamed:
        meta["call_ids_renumbered"] = renamed


class OpenAIMessages(Converter):
    name = "openai"
    description = (
        "OpenAI chat messages (under `messages` or any key, --messages-key) with tool_calls/tool or legacy "
        "function_call/function turns"
    )
    default_source = "openai-messages"

    def __init__(self, source: str | None = None, messages_key: str | None = None) -> None:
        super().__init__(source)
        self.messages_key = messages_key
        """The top-level key holding the messages (`--messages-key`); None: found per record."""

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping) or "chosen" in obj or "rejected" in obj:
            return 0.0
        key = messages_key(obj)
        if key is None:
            return 0.0
        msgs = obj[key]
        for m in msgs:  # LLaMA-Factory v1 typed parts use `value`, not `text`
            content = m.get("content")
            if isinstance(content, list) and any(isinstance(p, Mapping) and "value" in p for p in content):
                return 0.0
        roles = {m["role"] for m in msgs}
        if not roles <= _CHAT_ROLES | _TOOL_ROLES:
            return 0.0
        if isinstance(obj.get("label"), bool):  # KTO unpaired preference: claimed here to be rejected
            return 0.6
        # Under another key than `messages`, environment-specific converters (AgentInstruct's
        # `conversations`, ActionStudio's `conversation`) score higher on their own records.
        cap = 0.9 if key == "messages" else 0.7
        if any(k in obj for k in TOOL_KEYS) or roles & _TOOL_ROLES:
            return cap
        if any(m.get("tool_calls") or m.get("function_call") for m in msgs):
            return cap
        # Plain chats: a text-ReAct converter (observations as user turns) should win these.
        react = any(
            isinstance(m.get("content"), str) and "Action:" in m["content"] for m in msgs if m["role"] == "assistant"
        )
        return 0.2 if react else (0.4 if key == "messages" else 0.3)

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        reject_kto(obj)
        key = messages_key(obj, self.messages_key)
        if key is None:
            if self.messages_key:
                require(obj, self.messages_key, list)
            raise Reject(
                "missing_key",
                f"no list of {{role, content}} messages in the record (keys: {sorted(obj)[:12]}); pass --messages-key",
            )
        system, turns = messages_to_turns(require(obj, key, list), label=key)
        meta: dict[str, Any] = {}
        if key != "messages":
            meta["messages_key"] = key
        renumber_call_ids(turns, meta)
        tools = record_tools(obj, turns, meta, normalize=tool_from_openai)
        score = outcome_score(obj, meta)
        source = self.source_for(raw)
        split = obj.get("split") if isinstance(obj.get("split"), str) else None
        return [
            Trajectory(
                unique_trajectory_id=record_id(source, raw),
                source=source,
                task_instruction=system,
                tools=tools,
                conversation=turns,
                split=split,
                score=score,
                meta=meta,
            )
        ]

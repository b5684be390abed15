"""Hermes function-calling v1 (https://huggingface.co/datasets/NousResearch/hermes-function-calling-v1) and
the original Glaive function-calling v2 layout (https://huggingface.co/datasets/glaiveai/glaive-function-calling-v2).

Hermes: ShareGPT `{"id", "conversations": [{"from": system|human|gpt|tool, "value"}], "category", ...}`.
The system prompt lists the tools inside `<tools>[...]</tools>` (Python repr or JSON); gpt turns hold
`<tool_call>{'arguments': {...}, 'name': ...}</tool_call>` blocks (Python repr: ast.literal_eval) after an
optional thought; tool turns hold one `<tool_response>{"name", "content"}</tool_response>` block per call.
The tools block is moved to `tools` and cut from the instruction. json-mode records (`<schema>` in the
system prompt) have no tools: the gpt JSON answer is a plain assistant turn, the schema stays in the
instruction.

Glaive v2: `{"system": "SYSTEM: ... -\n{function JSON}\n{function JSON}", "chat": "USER: ...
ASSISTANT: <functioncall> {"name": ..., "arguments": '<JSON string>'} <|endoftext|>
FUNCTION RESPONSE: {...} ASSISTANT: ..."}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, Reject, ToolCall, Trajectory, Turn, record_id, require
from xlam_hpc.convert.common import (
    as_text,
    call_id,
    is_chat,
    loads_literal,
    normalize_tool,
    parse_arguments,
    take_pending,
    tool_turn,
)
from xlam_hpc.convert.reader import RawRecord

__all__ = ["Hermes"]

_TOOLS = re.compile(r"<tools>(.*?)</tools>", re.DOTALL)
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.DOTALL)
_TAGS = ("<tool_call>", "<tools>", "<tool_response>", "<schema>")
_GLAIVE_TURN = re.compile(r"(?:^|\n)[ \t]*(USER|ASSISTANT|FUNCTION RESPONSE):[ \t]?")
_GLAIVE_CALL = re.compile(
    r"^\{\s*\"name\"\s*:\s*\"(?P<name>[^\"]+)\"\s*,\s*\"arguments\"\s*:\s*'(?P<args>.*)'\s*\}$", re.DOTALL
)
_EOT = "<|endoftext|>"


def _literal(text: str, what: str, where: str, reason: str = "unparseable_action") -> Any:
    """JSON, or a Python literal (Hermes writes single quotes and True/False)."""
    # Some records carry escaped newlines ('\\n') around the payload instead of real ones.
    text = text.strip()
    text = re.sub(r"^(?:\\n|\s)+|(?:\\n|\s)+$", "", text)
    return loads_literal(text, f"{where}: {what}", reason)


def _call(data: Any, turn_idx: int, k: int, where: str) -> ToolCall:
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise Reject("unparseable_action", f"{where}: <tool_call> {k} has no top-level 'name': {str(data)[:120]}")
    args = parse_arguments(data.get("arguments"), f"{where} <tool_call> {k}")
    return ToolCall(id=call_id(turn_idx, k), name=data["name"], arguments=args)


class _Builder:
    """Collects turns; observations answer pending calls (by name when given, else in call order)."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.pending: list[ToolCall] = []

    def user(self, text: str) -> None:
        self.turns.append(Turn(role="user", content=text))

    def assistant(self, text: str, calls: list[ToolCall]) -> None:
        self.turns.append(Turn(role="assistant", content=text, tool_calls=calls))
        self.pending = list(calls)

    def observation(self, text: str, name: str | None, where: str) -> None:
        match = take_pending(self.pending, name)
        if match is None:
            raise Reject("unmatched_tool_turn", f"{where}: tool response without a pending call")
        self.turns.append(tool_turn(match, text))


def _response(block: str, where: str) -> tuple[str, str | None]:
    try:
        data = _literal(block, "tool response", where)
    except Reject:
        return block.strip(), None
    if isinstance(data, Mapping) and "content" in data and isinstance(data.get("name"), str):
        return as_text(data["content"]), data["name"]
    return block.strip(), None


def _hermes(convs: list[Any]) -> tuple[str, list[Any], list[Turn]]:
    system, specs, b = "", [], _Builder()
    for i, item in enumerate(convs):
        where = f"conversations[{i}]"
        role, value = require(item, "from", str), require(item, "value", str)
        if role == "system":
            if b.turns or system:
                raise Reject("late_system_turn", f"{where}: system turn after the conversation started")
            # the prompt's prose also says "within <tools> </tools> XML tags": take the non-empty block
            m = next((m for m in _TOOLS.finditer(value) if m.group(1).strip()), None)
            if m is not None:
                specs = _literal(m.group(1), "<tools> block", where, "invalid_tools_block")
                specs = [specs] if isinstance(specs, Mapping) else specs
                if not isinstance(specs, list):
                    raise Reject("invalid_tools_block", f"{where}: <tools> does not hold a list of tools")
                value = (value[: m.start()].rstrip() + "\n" + value[m.end() :].lstrip()).strip()
            system = value
        elif role in ("human", "user"):
            b.user(value)
        elif role in ("gpt", "assistant"):
            calls = [
                _call(_literal(blk, "<tool_call>", where), len(b.turns), k, where)
                for k, blk in enumerate(_CALL.findall(value))
            ]
            b.assistant(_CALL.sub("", value).strip() if calls else value, calls)
        elif role == "tool":
            for block in _RESPONSE.findall(value) or [value]:
                b.observation(*_response(block, where), where)
        else:
            raise Reject("unknown_role", f"{where}: unknown role '{role}'")
    return system, specs, b.turns


def _glaive_functions(system: str) -> tuple[str, list[Any]]:
    text = system.removeprefix("SYSTEM:").strip()
    start = text.find("{")
    if start < 0:
        return text, []
    decoder, specs, pos = json.JSONDecoder(), [], start
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            spec, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise Reject("invalid_tools_block", f"system: function definition is not JSON ({exc.msg})") from None
        specs.append(spec)
    return text[:start].strip().removesuffix("-").strip(), specs  # "... Use them if required -"


def _glaive_chat(chat: str) -> list[Turn]:
    pieces = _GLAIVE_TURN.split(chat)
    if pieces[0].strip():
        raise Reject("unparseable_chat", "chat: text before the first USER:/ASSISTANT: marker")
    b = _Builder()
    for n, (marker, piece) in enumerate(zip(pieces[1::2], pieces[2::2], strict=True)):
        where = f"chat turn {n}"
        text = piece.replace(_EOT, "").strip()
        if marker == "USER":
            b.user(text)
        elif marker == "FUNCTION RESPONSE":
            b.observation(text, None, where)
        elif "<functioncall>" in text:
            thought, payload = text.split("<functioncall>", 1)
            m = _GLAIVE_CALL.match(payload.strip())
            data = {"name": m["name"], "arguments": m["args"]} if m else _literal(payload, "<functioncall>", where)
            b.assistant(thought.strip(), [_call(data, len(b.turns), 0, where)])
        else:
            b.assistant(text, [])
    return b.turns


class Hermes(Converter):
    name = "hermes"
    description = "Hermes function-calling v1 (<tools>/<tool_call>/<tool_response>) and flat Glaive v2 chats"
    default_source = "hermes-fc-v1"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping):
            return 0.0
        if isinstance(obj.get("chat"), str) and isinstance(obj.get("system"), str):
            return 0.9 if re.search(r"(^|\n)\s*USER:", obj["chat"]) else 0.0
        convs = obj.get("conversations")
        if not is_chat(convs, "from", "value") or "chosen" in obj:
            return 0.0
        tagged = any(isinstance(t["value"], str) and tag in t["value"] for t in convs for tag in _TAGS)
        return 0.9 if tagged else 0.0

    def source_for(self, raw: RawRecord) -> str:
        if self.source_override:
            return self.source_override
        return "glaive-fc-v2" if isinstance(raw.obj, Mapping) and "chat" in raw.obj else self.default_source

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        if isinstance(obj, Mapping) and "chat" in obj:
            system, specs = _glaive_functions(require(obj, "system", str))
            turns = _glaive_chat(require(obj, "chat", str))
            meta: dict[str, Any] = {}
        else:
            system, specs, turns = _hermes(require(obj, "conversations", list))
            meta = {k: obj[k] for k in ("category", "subcategory", "task") if isinstance(obj.get(k), str)}
        source = self.source_for(raw)
        return [
            Trajectory(
                unique_trajectory_id=record_id(source, raw),
                source=source,
                task_instruction=system,
                tools=[normalize_tool(s) for s in specs],
                conversation=turns,
                meta=meta,
            )
        ]

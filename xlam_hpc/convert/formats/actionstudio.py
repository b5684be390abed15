"""xLAM ActionStudio "unified" trajectories (https://github.com/SalesforceAIResearch/xLAM, actionstudio/), and
records already in this project's unified format (converting our own output again is the identity).

ActionStudio layout: `{"unique_trajectory_id"?, "task_instruction"?, "few_shot_examples"?, "dataset"?, ...,
"tools": [{"type": "function", "function": {name, description, parameters}}], "conversation": [user |
assistant {content, tool_calls: [{type, id, function: {name, arguments}}]} | tool {name?, content: str |
list, tool_call_id}], "critic_score"?: {"score": "2", "explanation"} (or that object as JSON text) | "TODO"}`.
Normalisation: nested tools/calls → flat; list/dict tool content → JSON text; critic score → `score`
(its explanation → meta); a leading system turn → `task_instruction` when that is empty (a later one
rejects); Python type names in parameter schemas → JSON schema; any other top-level key → meta.
A tool turn whose `tool_call_id` names no call is re-pointed at the single unanswered call of the
preceding assistant turn (CriticLAM example 2 has such a stale id); the repair is listed in
`meta["repaired_tool_call_ids"]`.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, Preference, Reject, ToolCall, Trajectory, Turn, make_id, require
from xlam_hpc.convert.common import as_text, is_chat, is_number, normalize_tool, openai_call
from xlam_hpc.convert.reader import RawRecord

__all__ = ["ActionStudio"]

_KNOWN = {
    "unique_trajectory_id",
    "source",
    "task_instruction",
    "tools",
    "conversation",
    "score",
    "split",
    "meta",
    "critic_score",
    "chosen",
    "rejected",
}


def _content(value: Any) -> str:
    return "" if value is None else as_text(value)


def _turn(t: Any, idx: int, where: str) -> Turn:
    role = require(t, "role", str)
    if role not in ("user", "assistant", "tool"):
        raise Reject("unknown_role", f"{where}: role '{role}' (system prompts belong in task_instruction)")
    calls = [openai_call(c, idx, k, where, args_where=where) for k, c in enumerate(t.get("tool_calls") or [])]
    cid = t.get("tool_call_id")
    return Turn(
        role=role,
        content=_content(t.get("content")),
        tool_calls=calls,
        tool_call_id=str(cid) if cid is not None else None,
        name=t.get("name"),
        train=t.get("train", True) is not False,
    )


def _repair_ids(turns: list[Turn]) -> list[dict[str, Any]]:
    repairs = []
    calls: list[ToolCall] = []
    answered: set[str] = set()
    for i, turn in enumerate(turns):
        if turn.role == "assistant":
            calls, answered = turn.tool_calls, set()
        elif turn.role == "tool":
            ids = {c.id for c in calls}
            open_calls = [c for c in calls if c.id not in answered]
            if turn.tool_call_id not in ids and len(open_calls) == 1 and turn.name in (None, open_calls[0].name):
                repairs.append({"turn": i, "from": turn.tool_call_id, "to": open_calls[0].id})
                turn.tool_call_id = open_calls[0].id
            answered.add(turn.tool_call_id or "")
    return repairs


def _score(obj: Mapping[str, Any], meta: dict[str, Any]) -> float | None:
    if obj.get("score") is not None:
        return float(obj["score"])
    critic = obj.get("critic_score")
    if isinstance(critic, str) and critic.strip().startswith("{"):
        # CriticLAM writes the verdict as JSON text, sometimes with Python escapes (\') that JSON rejects.
        try:
            critic = json.loads(critic)
        except json.JSONDecodeError:
            try:
                critic = ast.literal_eval(critic.strip())
            except (ValueError, SyntaxError):
                raise Reject("bad_score", "critic_score is neither JSON nor a Python literal") from None
    if isinstance(critic, Mapping):
        if critic.get("explanation"):
            meta["critic_explanation"] = critic["explanation"]
        try:
            return float(critic.get("score"))
        except (TypeError, ValueError):
            raise Reject("bad_score", f"critic_score.score is not a number: {critic.get('score')!r}") from None
    if is_number(critic):
        return float(critic)
    return None  # absent, or "TODO" (not rated yet)


class ActionStudio(Converter):
    name = "actionstudio"
    description = "xLAM ActionStudio unified trajectories (nested tools/tool_calls), or our own unified records"
    default_source = "xlam-actionstudio"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping):
            return 0.0
        if not is_chat(obj.get("conversation"), "role"):
            return 0.0
        if "unique_trajectory_id" in obj or "tools" in obj or "critic_score" in obj:
            return 0.95
        return 0.7

    def source_for(self, raw: RawRecord) -> str:
        native = raw.obj.get("source") if isinstance(raw.obj, Mapping) else None
        return self.source_override or (native if isinstance(native, str) and native else self.default_source)

    def convert(self, raw: RawRecord) -> Iterable[Trajectory | Preference]:
        obj = raw.obj
        conv = require(obj, "conversation", list)
        instruction = obj.get("task_instruction") or ""
        if conv and isinstance(conv[0], Mapping) and conv[0].get("role") == "system" and not instruction:
            instruction, conv = _content(conv[0].get("content")), conv[1:]  # a leading system turn only
        turns = [_turn(t, i, f"conversation[{i}]") for i, t in enumerate(conv)]
        meta = dict(obj.get("meta") or {})
        meta.update({k: v for k, v in obj.items() if k not in _KNOWN})
        repairs = _repair_ids(turns)
        if repairs:
            meta["repaired_tool_call_ids"] = repairs
        source = self.source_for(raw)
        split = obj.get("split")
        common: dict[str, Any] = {
            "unique_trajectory_id": obj.get("unique_trajectory_id") or make_id(source, raw),
            "source": source,
            "task_instruction": instruction,
            "tools": [normalize_tool(t) for t in obj.get("tools") or []],
            "conversation": turns,
            "score": _score(obj, meta),
            "split": split if isinstance(split, str) else None,
            "meta": meta,
        }
        if isinstance(obj.get("chosen"), Mapping) and isinstance(obj.get("rejected"), Mapping):
            chosen = _turn(obj["chosen"], len(turns), "chosen")
            rejected = _turn(obj["rejected"], len(turns), "rejected")
            return [Preference(**common, chosen=chosen, rejected=rejected)]
        return [Trajectory(**common)]

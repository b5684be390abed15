"""xLAM / APIGen function-calling records (Salesforce/xlam-function-calling-60k).

Layout (https://huggingface.co/datasets/Salesforce/xlam-function-calling-60k, CC-BY-4.0):
    {"id": int, "query": str,
     "tools": "<JSON string: [{name, description,
                               parameters: {arg: {type: 'str'|'int'|..., description, default?}}}]>",
     "answers": "<JSON string: [{name, arguments: {...}}]>"}

xLAM parameters are flat dicts of arguments with Python-ish type names; they become JSON-schema objects
(`xlam_schema` in xlam_hpc.convert.common, also used by other converters for the same legacy types). A
record becomes user(query) → assistant(tool_calls): the dataset has no tool results, so the call is the
last turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlam_hpc.convert.base import Converter, Reject, ToolCall, Trajectory, Turn, make_id, parse_json_field, require
from xlam_hpc.convert.common import call_id, json_type, normalize_tool, xlam_schema
from xlam_hpc.convert.reader import RawRecord

# json_type/normalize_tool/xlam_schema live in xlam_hpc.convert.common; re-exported for existing imports.
__all__ = ["XlamFunctionCalling", "json_type", "normalize_tool", "xlam_schema"]


class XlamFunctionCalling(Converter):
    name = "xlam-fc"
    description = "xLAM/APIGen function-calling-60k: {id, query, tools: JSON str, answers: JSON str}"
    default_source = "xlam-fc-60k"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("query"), str):
            return 0.0
        if "answers" in obj and "tools" in obj:
            return 0.95
        return 0.0

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        query = require(obj, "query", str)
        tools_raw = parse_json_field(require(obj, "tools", (str, list)), "tools")
        answers = parse_json_field(require(obj, "answers", (str, list)), "answers")
        if not isinstance(tools_raw, list):
            raise Reject("wrong_type", f"'tools' should be a list, got {type(tools_raw).__name__}")
        if not isinstance(answers, list):
            raise Reject("wrong_type", f"'answers' should be a list, got {type(answers).__name__}")
        if not answers:
            raise Reject("empty_answers", "'answers' is empty: no call to train on (irrelevance record?)")
        calls = []
        for k, ans in enumerate(answers):
            name = ans.get("name") if isinstance(ans, Mapping) else None
            if not isinstance(name, str):
                raise Reject("bad_answer", f"answers[{k}] has no 'name': {ans!r:.120}")
            args = parse_json_field(ans.get("arguments", {}), f"answers[{k}].arguments")
            if not isinstance(args, dict):
                raise Reject("arguments_not_object", f"answers[{k}].arguments is {type(args).__name__}")
            calls.append(ToolCall(id=call_id(1, k), name=name, arguments=args))
        source = self.source_for(raw)
        native = obj.get("id")
        return [
            Trajectory(
                unique_trajectory_id=make_id(source, raw, native),
                source=source,
                tools=[normalize_tool(t) for t in tools_raw],
                conversation=[Turn(role="user", content=query), Turn(role="assistant", tool_calls=calls)],
                meta={"original_id": native, "file": Path(raw.path).name},
            )
        ]

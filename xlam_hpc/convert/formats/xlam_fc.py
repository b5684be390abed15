"""xLAM / APIGen function-calling records (Salesforce/xlam-function-calling-60k).

Layout (https://huggingface.co/datasets/Salesforce/xlam-function-calling-60k, CC-BY-4.0):
    {"id": int, "query": str,
     "tools": "<JSON string: [{name, description,
                               parameters: {arg: {type: 'str'|'int'|..., description, default?}}}]>",
     "answers": "<JSON string: [{name, arguments: {...}}]>"}

xLAM parameters are flat dicts of arguments with Python-ish type names; they become JSON-schema objects
(`xlam_schema`, also used by other converters for the same legacy types). A record becomes
user(query) → assistant(tool_calls): the dataset has no tool results, so the call is the last turn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlam_hpc.convert.base import (
    Converter,
    FunctionSpec,
    Reject,
    ToolCall,
    Trajectory,
    Turn,
    make_id,
    parse_json_field,
    require,
    tool_from_openai,
)
from xlam_hpc.convert.reader import RawRecord

__all__ = ["XlamFunctionCalling", "json_type", "normalize_tool", "xlam_schema"]

_SIMPLE_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
    "tuple": "array",
    "set": "array",
    "array": "array",
    "dict": "object",
    "object": "object",
    "none": "null",
    "null": "null",
}
_GENERIC = re.compile(r"^(\w+)\s*\[(.*)\]$")
_OPTIONAL = re.compile(r",\s*optional\s*$", re.IGNORECASE)


def _split_args(text: str) -> list[str]:
    """Top-level comma split of 'int, List[str]' (brackets nest)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def json_type(pytype: str) -> dict[str, Any]:
    """JSON-schema fragment for a Python-ish type name ('str', 'List[int]', 'Optional[float]'...).

    Unknown names (Callable, Any, custom classes) give `{}` (any value) rather than a wrong type.
    """
    text = _OPTIONAL.sub("", pytype.strip())
    simple = _SIMPLE_TYPES.get(text.lower())
    if simple is not None:
        return {"type": simple}
    m = _GENERIC.match(text)
    if not m:
        return {}
    outer, inner = m.group(1).lower(), _split_args(m.group(2))
    if outer in ("list", "tuple", "set", "sequence", "iterable"):
        items = json_type(inner[0]) if len(inner) == 1 else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if outer in ("dict", "mapping"):
        return {"type": "object"}
    if outer in ("optional", "union"):
        types = [json_type(a).get("type") for a in inner if a.lower() not in ("none", "nonetype")]
        if all(isinstance(t, str) for t in types) and types:
            return {"type": types[0] if len(set(types)) == 1 else sorted(set(types))}
    return {}


def _is_optional(pytype: Any) -> bool:
    return isinstance(pytype, str) and (
        bool(_OPTIONAL.search(pytype)) or pytype.strip().lower().startswith("optional[")
    )


_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}


def _property(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One property schema with Python type names mapped, recursing into `items` and `properties`."""
    prop = dict(spec)
    t = prop.get("type")
    if isinstance(t, str) and t.lower() not in _JSON_TYPES:
        prop.pop("type")
        prop = {**json_type(t), **prop}
    if isinstance(prop.get("items"), Mapping):
        prop["items"] = _property(prop["items"])
    if isinstance(prop.get("properties"), Mapping):
        prop["properties"] = {k: _property(v) if isinstance(v, Mapping) else v for k, v in prop["properties"].items()}
    return prop


def _is_schema(params: Mapping[str, Any]) -> bool:
    """A JSON-schema object rather than xLAM flat args (where 'type'/'properties' could be arg names)."""
    if params.get("type") in ("object", "dict"):
        return True
    props = params.get("properties")
    return (
        isinstance(props, Mapping)
        and not isinstance(props.get("type"), str)
        and all(isinstance(v, Mapping) for v in props.values())
    )


def xlam_schema(params: Any, required: Any = None) -> dict[str, Any]:
    """A JSON-schema object for xLAM flat args `{arg: {type, description, default?}}`, or a JSON schema
    with Python type names (`type: 'dict'`, properties typed 'str'). Idempotent on clean JSON schemas."""
    if not isinstance(params, Mapping) or not params:
        return {"type": "object", "properties": {}}
    if _is_schema(params):
        out = dict(params)
        out["type"] = "object"
        out["properties"] = {
            k: _property(v) if isinstance(v, Mapping) else v for k, v in out.get("properties", {}).items()
        }
        if "required" not in out and isinstance(required, list):
            out["required"] = required
        return out
    props: dict[str, Any] = {}
    req: list[str] = []
    for arg, spec in params.items():
        if not isinstance(spec, Mapping):
            raise Reject("bad_tool_spec", f"argument '{arg}' is not an object: {spec!r:.80}")
        props[arg] = _property(spec)
        if "default" not in spec and not _is_optional(spec.get("type")):
            req.append(arg)
    return {
        "type": "object",
        "properties": props,
        "required": required if isinstance(required, list) else req,
    }


def normalize_tool(spec: Any) -> FunctionSpec:
    """FunctionSpec from an OpenAI/xLAM tool spec, with xLAM legacy parameter types made JSON-schema."""
    fn = tool_from_openai(spec)
    raw = spec.get("function", spec) if isinstance(spec, Mapping) else {}
    fn.parameters = xlam_schema(fn.parameters, raw.get("required") if isinstance(raw, Mapping) else None)
    return fn


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
            calls.append(ToolCall(id=f"call_1_{k}", name=name, arguments=args))
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

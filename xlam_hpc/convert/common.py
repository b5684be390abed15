"""Helpers shared by the format converters (xlam_hpc.convert.formats.*).

What belongs here: logic that two or more converter modules need and that behaves the same for each of
them — Python/xLAM type names → JSON schema and tool-spec normalization, call-argument parsing, generated
call ids (`call_<turn>_<k>`) with their assistant and tool turns, joining thought text, sniffing chat
shapes, and the 0-5 score scale. Parsing of one source's layout stays in its formats/ module, and a
helper stays there while one module uses it. Where two converters differ on purpose (reject reasons,
lenient vs strict parsing), a helper takes that difference as a parameter or is not shared.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from xlam_hpc.convert.base import FunctionSpec, Reject, ToolCall, Turn, parse_json_field, tool_from_openai

__all__ = [
    "OUTCOME_KEYS",
    "PY_TYPES",
    "TOOL_KEYS",
    "ToolResults",
    "add_call",
    "as_text",
    "call_id",
    "infer_tools",
    "is_chat",
    "is_number",
    "join_thought",
    "json_arguments",
    "json_type",
    "json_value_type",
    "loads_literal",
    "merge_call_turn",
    "messages_key",
    "normalize_tool",
    "object_schema",
    "openai_call",
    "outcome_score",
    "parse_arguments",
    "parse_tools",
    "record_tools",
    "reject_kto",
    "reward_score",
    "take_pending",
    "tool_turn",
    "tool_turns",
    "top_level_system",
    "xlam_schema",
]

# --- tool specs: Python/xLAM type names → JSON schema ---

PY_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array", "dict": "object"}
"""JSON-schema type of each Python builtin type name (API-Bank's parameter types; the core of `json_type`)."""
_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}
_SIMPLE_TYPES = {**PY_TYPES, "tuple": "array", "set": "array", "none": "null", **{t: t for t in _JSON_TYPES}}
_GENERIC = re.compile(r"^(\w+)\s*\[(.*)\]$")
_OPTIONAL = re.compile(r",\s*optional\s*$", re.IGNORECASE)


def object_schema(properties: dict[str, Any], required: list[Any] | None = None) -> dict[str, Any]:
    """`{"type": "object", "properties", "required"?}` (`required` only when given)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required is not None:
        schema["required"] = required
    return schema


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
        return object_schema({})
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
    return object_schema(props, required if isinstance(required, list) else req)


def normalize_tool(spec: Any) -> FunctionSpec:
    """FunctionSpec from an OpenAI/xLAM tool spec, with xLAM legacy parameter types made JSON-schema."""
    fn = tool_from_openai(spec)
    raw = spec.get("function", spec) if isinstance(spec, Mapping) else {}
    fn.parameters = xlam_schema(fn.parameters, raw.get("required") if isinstance(raw, Mapping) else None)
    return fn


def parse_tools(value: Any, key: str = "tools") -> list[FunctionSpec]:
    """Tools given as a JSON string or a list (OpenAI nested or flat specs); '' / None → []."""
    if value in (None, ""):
        return []
    specs = parse_json_field(value, key)
    if not isinstance(specs, list):
        raise Reject("wrong_type", f"'{key}' should be a list of tool specs, got {type(specs).__name__}")
    return [normalize_tool(s) for s in specs]


# --- calls: arguments, literals, ids ---


def call_id(turn: int, k: int = 0) -> str:
    """Generated id of the k-th call of the assistant turn at index `turn` (for sources without ids)."""
    return f"call_{turn}_{k}"


def json_arguments(text: str, where: str, reason: str = "invalid_arguments_json") -> Any:
    """A call's arguments string parsed as JSON: blank → `{}`; invalid JSON rejects as `reason`."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Reject(reason, f"{where}: arguments are not valid JSON ({exc.msg})") from None


def parse_arguments(value: Any, where: str) -> dict[str, Any]:
    """Call arguments as a dict: objects pass, JSON strings are parsed, None is `{}`, anything else rejects."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = json_arguments(value, where)
    if not isinstance(value, dict):
        raise Reject("arguments_not_object", f"{where}: arguments must be an object, got {type(value).__name__}")
    return value


def openai_call(call: Any, turn: int, k: int, where: str, args_where: str | None = None) -> ToolCall:
    """ToolCall of an OpenAI `{id?, type?, function: {name, arguments}}` (or flat `{name, arguments}`) call.

    A call without an id gets `call_<turn>_<k>`; argument errors name `args_where` (default: the call name).
    """
    fn = call.get("function", call) if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise Reject("bad_tool_call", f"{where}: tool call {k} has no function name")
    cid = call.get("id") or call_id(turn, k)
    args_where = f"{where} call '{fn['name']}'" if args_where is None else args_where
    return ToolCall(id=str(cid), name=fn["name"], arguments=parse_arguments(fn.get("arguments"), args_where))


def loads_literal(text: str, what: str = "value", reason: str = "unparseable_literal") -> Any:
    """JSON, else a Python literal (datasets that print reprs: single quotes, True/None); neither rejects."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise Reject(reason, f"{what} is neither JSON nor a Python literal") from None


# --- turns ---


def as_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """A string as is, anything else as JSON text (non-ASCII kept; `default` as in json.dumps)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=default)


def join_thought(thought: str, text: str, sep: str = "\n\n") -> str:
    """`text` appended to the thought so far with `sep`, outer blanks stripped (blank `text`: no change)."""
    return f"{thought}{sep}{text.strip()}".strip()


def add_call(turns: list[Turn], name: str, arguments: dict[str, Any], content: str = "") -> ToolCall:
    """Append an assistant turn (thought `content`) making one call with id `call_<turn>_0`; the call."""
    call = ToolCall(id=call_id(len(turns)), name=name, arguments=arguments)
    turns.append(Turn(role="assistant", content=content, tool_calls=[call]))
    return call


def tool_turn(call: ToolCall, content: str) -> Turn:
    """The tool turn answering `call` with the observation `content`."""
    return Turn(role="tool", content=content, tool_call_id=call.id, name=call.name)


def take_pending(pending: list[ToolCall], name: str | None) -> ToolCall | None:
    """The pending call a result named `name` answers (that name, else the oldest), removed; None if none."""
    match = next((c for c in pending if c.name == name), pending[0] if pending else None)
    if match is not None:
        pending.remove(match)
    return match


_RESULT_KEYS = {"tool_call_id", "name", "content"}


def _split_results(text: str, calls: list[ToolCall]) -> list[str] | None:
    """Per-call contents when `text` is a JSON list of `{tool_call_id?, name?, content}`, one per call."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(items, list) or len(items) != len(calls):
        return None
    for item, call in zip(items, calls, strict=True):
        if not isinstance(item, Mapping) or "content" not in item or not set(item) <= _RESULT_KEYS:
            return None
        if "name" in item and item["name"] != call.name:
            return None
    return [as_text(item["content"]) for item in items]


def tool_turns(texts: list[str], calls: list[ToolCall], where: str) -> list[Turn]:
    """Tool turns for consecutive observations `texts` answering `calls` (in call order); one JSON list
    holding one result per call is split."""
    if len(texts) == 1 and calls:
        split = _split_results(texts[0], calls)
        if split is not None:
            texts = split
    if len(texts) > len(calls):
        raise Reject("unmatched_tool_turn", f"{where}: {len(texts)} tool results for {len(calls)} call(s)")
    return [tool_turn(c, t) for t, c in zip(texts, calls, strict=False)]


class ToolResults:
    """The calls of the last assistant turn and the observations buffered for them (LLaMA-Factory layouts)."""

    def __init__(self, turns: list[Turn]) -> None:
        self.turns = turns
        self.calls: list[ToolCall] = []
        self.texts: list[str] = []

    def flush(self, where: str) -> None:
        """Append the tool turns of the buffered observations (see `tool_turns`) and forget the calls."""
        self.turns.extend(tool_turns(self.texts, self.calls, where))
        self.texts.clear()
        self.calls.clear()


def top_level_system(obj: Mapping[str, Any], system: str) -> str:
    """The instruction of a record that may give it as a top-level 'system' key or a system turn, not both."""
    top = obj.get("system")
    if isinstance(top, str) and top:
        if system:
            raise Reject("late_system_turn", "both a 'system' key and a system turn")
        return top
    return system


# --- sniffing and scores ---


def is_chat(turns: Any, *keys: str) -> bool:
    """A non-empty list of objects that all have `keys` (e.g. 'from', 'value' or 'role')."""
    return (
        isinstance(turns, list)
        and bool(turns)
        and all(isinstance(t, Mapping) and all(k in t for k in keys) for t in turns)
    )


def is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def reward_score(reward: float) -> float:
    """The 0-5 `score` of a 0..1 environment reward (the scale `convert --min-score` filters on)."""
    return 5.0 * float(reward)


# --- generic chat records: where the messages are, tools, outcomes, KTO ---

_NOT_MESSAGES = {"chosen", "rejected", "prompt", "completion", "chosen_messages", "rejected_messages"}
_MESSAGE_KEYS = ("messages", "conversations", "conversation", "traj", "trajectory", "dialog", "dialogue", "chat")
TOOL_KEYS = ("tools", "functions", "available_tools")
"""Top-level keys that may hold a record's tool specs (JSON string or list), first present wins."""


def _is_messages(value: Any) -> bool:
    """A non-empty list of objects that all have a `role`, some with `content` (calls may omit it)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in value)
        and any("content" in m for m in value)
    )


def messages_key(obj: Any, override: str | None = None) -> str | None:
    """The top-level key of a record holding OpenAI-style messages (a list of `{role, content}` objects):
    `override` when given and present, else `messages`, `conversations`, ... in that order, else the first
    such key in the record. None when there is none. Preference keys (chosen/rejected/prompt) never count."""
    if not isinstance(obj, Mapping):
        return None
    if override:
        return override if override in obj else None
    found = [k for k, v in obj.items() if k not in _NOT_MESSAGES and _is_messages(v)]
    return next((k for k in _MESSAGE_KEYS if k in found), found[0] if found else None)


def json_value_type(value: Any) -> str:
    """The JSON-schema type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def infer_tools(turns: list[Turn]) -> list[FunctionSpec]:
    """Tool specs inferred from the calls of `turns` (for datasets whose tools live in an environment): one
    per call name in first-call order, with each argument seen and its JSON type(s) (integer and number
    seen together give number), `required` = the arguments every call passed, and an empty description."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for turn in turns:
        for call in turn.tool_calls:
            seen.setdefault(call.name, []).append(call.arguments if isinstance(call.arguments, dict) else {})
    tools = []
    for name, calls in seen.items():
        types: dict[str, set[str]] = {}
        for args in calls:
            for arg, value in args.items():
                types.setdefault(arg, set()).add(json_value_type(value))
        props: dict[str, Any] = {}
        for arg, seen_types in types.items():
            ts = seen_types - {"integer"} if {"integer", "number"} <= seen_types else seen_types
            props[arg] = {"type": next(iter(ts))} if len(ts) == 1 else {"type": sorted(ts)}
        required = [arg for arg in types if all(arg in args for args in calls)]
        tools.append(FunctionSpec(name=name, description="", parameters=object_schema(props, required)))
    return tools


def record_tools(
    obj: Mapping[str, Any],
    turns: list[Turn],
    meta: dict[str, Any],
    normalize: Callable[[Any], FunctionSpec] = normalize_tool,
) -> list[FunctionSpec]:
    """The tools of a chat record: from the first of `TOOL_KEYS` present (JSON string or list of specs,
    each made a FunctionSpec by `normalize`); when none gives a spec but the conversation calls tools, tools
    inferred from the calls (`infer_tools`) and `meta["tools_inferred"] = True`."""
    key = next((k for k in TOOL_KEYS if obj.get(k) not in (None, "")), None)
    specs: list[FunctionSpec] = []
    if key is not None:
        value = parse_json_field(obj[key], key)
        if not isinstance(value, list):
            raise Reject("wrong_type", f"'{key}' should be a list of tool specs, got {type(value).__name__}")
        specs = [normalize(s) for s in value]
    if not specs and any(t.tool_calls for t in turns):
        meta["tools_inferred"] = True
        return infer_tools(turns)
    return specs


def merge_call_turn(turns: list[Turn], turn: Turn) -> bool:
    """Merge an assistant turn that only calls tools into the assistant text turn just before it (OpenAI/MCP
    traces send the text and the calls as two messages): the calls join that turn, and its reasoning follows the
    text turn's (blank line between). True when merged."""
    prev = turns[-1] if turns else None
    if (
        prev is None
        or prev.role != "assistant"
        or prev.tool_calls
        or turn.role != "assistant"
        or not turn.tool_calls
        or turn.content.strip()
    ):
        return False
    prev.tool_calls = list(turn.tool_calls)
    prev.reasoning = "\n\n".join(r for r in (prev.reasoning, turn.reasoning) if r)
    prev.train = prev.train and turn.train
    return True


OUTCOME_KEYS = ("score", "reward", "success", "win")
"""Episode outcome fields of generic chat records, in priority order (see `outcome_score`)."""


def outcome_score(obj: Mapping[str, Any], meta: dict[str, Any]) -> float | None:
    """The record's `score` from its episode outcome, so `--min-score` can drop failed episodes.

    Mapping (the first of `OUTCOME_KEYS` present and not null): `score` (a number) is kept as is; `reward`
    in 0..1 and `success`/`win` (true/false → 1/0, or a 0..1 number) give score = 5 * value, the 0-5 scale
    of the other environment converters. Every outcome field present is copied to meta unchanged, with
    `meta["score_scale"]` saying which one gave the score. A value outside this mapping rejects
    (`bad_outcome`)."""
    present = [k for k in OUTCOME_KEYS if obj.get(k) is not None]
    for key in present:
        meta[key] = obj[key]
    if not present:
        return None
    key, value = present[0], obj[present[0]]
    if key == "score":
        if not is_number(value):
            raise Reject("bad_outcome", f"'score' should be a number, got {value!r:.80}")
        meta["score_scale"] = "score"
        return float(value)
    if isinstance(value, bool):
        meta["score_scale"] = f"5 * {key} (true = 1, false = 0)"
        return 5.0 if value else 0.0
    if not is_number(value) or not 0 <= value <= 1:
        raise Reject("bad_outcome", f"'{key}' should be true/false or a number in 0..1, got {value!r:.80}")
    meta["score_scale"] = f"5 * {key}"
    return reward_score(value)


def reject_kto(obj: Any) -> None:
    """Reject an unpaired-preference (KTO) record: LLaMA-Factory `label` (kto_tag) or TRL `label` with a
    `completion`. One completion labelled good or bad is not SFT data (a bad one would be learned as a
    good one) and the unified schema has no KTO kind."""
    if isinstance(obj, Mapping) and isinstance(obj.get("label"), bool):
        raise Reject(
            "kto_unsupported",
            f"KTO record (label {str(obj['label']).lower()}): unpaired preference data is not SFT data and "
            "the unified schema has no KTO kind; convert paired data (chosen/rejected) for DPO instead",
        )

"""ToolAlpaca toolsets with generated instances (https://github.com/tangqiaoyu/ToolAlpaca).

Layout: a JSON array, one toolset (API) per element:
`{"Name", "Category", "Function_Description": {func: "<desc>\\nParameters: {json}\\nOutput: ..."},
  "Instructions", "Golden_Answers", "Instances": [{"input", "output", "Final Thought",
  "intermediate_steps": [[[action, action_input_json, thought_text], observation], ...]}]}`.
Each instance becomes one trajectory: user `input`; per step an assistant turn (reasoning = the thought,
i.e. the 3rd element before "ASSISTANT Action:") with one call, then the tool turn (observation); the
final assistant turn has content `output` (the user-facing answer) and reasoning `Final Thought`.
An instance that the generator itself marked failed (`{"error": ...}`,
no steps) is rejected alone as `generation_error` ('record N item i', i = the instance index, also kept in
meta["instance"]); so is a malformed instance (bad step, invalid action input), and the toolset's other
instances are kept. A toolset without `Instances` (the evaluation file) or with an empty list is
rejected as `no_instances`.

Tools: the `Parameters:` JSON of each function is parsed into JSON-schema properties
(`"Required. integer. The id."` → `{"type": "integer", "description": "The id."}` + required;
`One of: [a, b]` → enum; `Array[string]` → array of strings). A function whose parameters do not parse
gets a free-form object schema (`{"type": "object"}`, any arguments). The description is the text
without the Parameters line. The `components` entry (shared output types) is not a function; when
non-empty it becomes the task instruction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, FunctionSpec, Reject, Trajectory, Turn, make_id, parse_json_field, require
from xlam_hpc.convert.common import add_call, object_schema, tool_turn
from xlam_hpc.convert.reader import RawRecord

__all__ = ["ToolAlpaca"]

_PARAMS = re.compile(r"\nParameters: (.*?)(?=\nOutput:|\Z)", re.S)
_SIMPLE = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "object": "object",
}
_ENUM = re.compile(r"^One of: \[(.*?)\]\.\s*")


def _split_type(text: str) -> tuple[str, str]:
    """('Array[Object{...}]', rest) — the type token ends at the first '.' outside brackets."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "." and depth == 0:
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def _type_schema(token: str) -> dict[str, Any] | None:
    simple = _SIMPLE.get(token.lower())
    if simple:
        return {"type": simple}
    if token.startswith("Array[") and token.endswith("]"):
        inner = _type_schema(token[6:-1].split("{", 1)[0].strip())
        return {"type": "array", **({"items": inner} if inner else {})}
    if token.startswith("Object{"):
        return {"type": "object"}
    return None


def _property(text: str) -> tuple[dict[str, Any], bool]:
    """(JSON schema, required) of one ToolAlpaca parameter text."""
    required = text.startswith("Required.")
    token, rest = _split_type(text.removeprefix("Required.").strip())
    schema = _type_schema(token)
    if schema is None:  # not "<type>. <description>": keep the whole text as the description
        return {"description": text}, required
    m = _ENUM.match(rest)
    if m:
        schema["enum"] = [v.strip() for v in m.group(1).split(",")]
        rest = rest[m.end() :]
    if rest:
        schema["description"] = rest
    return schema, required


def _tool(name: str, text: str) -> FunctionSpec:
    m = _PARAMS.search(text)
    description = (text[: m.start()] + text[m.end() :]).strip() if m else text.strip()
    params: dict[str, Any] = {"type": "object"}  # free-form when the Parameters text does not parse
    try:
        raw = json.loads(m.group(1)) if m else {}
    except json.JSONDecodeError:
        raw = None
    if isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
        props, required = {}, []
        for arg, spec in raw.items():
            props[arg], req = _property(spec)
            if req:
                required.append(arg)
        params = object_schema(props, required)
    return FunctionSpec(name=name, description=description, parameters=params)


def _thought(text: Any) -> str:
    return str(text).split("ASSISTANT Action:", 1)[0].strip() if text else ""


class ToolAlpaca(Converter):
    name = "toolalpaca"
    description = "ToolAlpaca toolsets: Function_Description + Instances with intermediate_steps"
    default_source = "toolalpaca"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if isinstance(obj, Mapping) and isinstance(obj.get("Function_Description"), Mapping):
            return 0.95 if "Instances" in obj or "Instructions" in obj else 0.7
        return 0.0

    def convert(self, raw: RawRecord) -> Iterable[Trajectory | Reject]:
        obj = raw.obj
        descs = require(obj, "Function_Description", dict)
        name = str(obj.get("Name") or raw.index)
        if "Instances" not in obj:
            raise Reject("no_instances", f"toolset {name!r} has no Instances (evaluation data without trajectories)")
        instances = require(obj, "Instances", list)
        if not instances:
            raise Reject("no_instances", f"toolset {name!r} has an empty Instances list")
        tools = [_tool(fn, str(text)) for fn, text in descs.items() if fn != "components"]
        components = str(descs.get("components") or "").strip()
        source = self.source_for(raw)
        out: list[Trajectory | Reject] = []
        for i, inst in enumerate(instances):
            where = f"toolset {name!r} instance {i}"
            if isinstance(inst, Mapping) and "intermediate_steps" not in inst and "error" in inst:
                error = str(inst["error"])[:200]
                out.append(Reject("generation_error", f"{where}: generation failed upstream: {error}", item=i))
                continue
            try:
                turns = self._instance(inst)
            except Reject as exc:
                out.append(Reject(exc.reason, f"{where}: {exc}", item=i))
                continue
            meta = {"toolset": name, "category": obj.get("Category"), "instance": i}
            out.append(
                Trajectory(
                    unique_trajectory_id=make_id(source, raw, name, str(i)),
                    source=source,
                    task_instruction=components,
                    tools=tools,
                    conversation=turns,
                    meta=meta,
                )
            )
        return out

    @staticmethod
    def _instance(inst: Any) -> list[Turn]:
        user = require(inst, "input", str)
        output = require(inst, "output", str)
        turns = [Turn(role="user", content=user)]
        for k, step in enumerate(require(inst, "intermediate_steps", list)):
            try:
                (action, action_input, thought_text), observation = step
            except (TypeError, ValueError):
                raise Reject("bad_step", f"step {k} is not [[action, input, thought], observation]") from None
            args = parse_json_field(action_input, f"step {k} action input")
            if not isinstance(args, dict):
                raise Reject("invalid_json_field", f"step {k} action input is not a JSON object")
            call = add_call(turns, str(action), args)
            turns[-1].reasoning = _thought(thought_text)
            turns.append(tool_turn(call, str(observation)))
        final_thought = str(inst.get("Final Thought") or "").strip()
        reasoning = final_thought if final_thought != output.strip() else ""
        turns.append(Turn(role="assistant", content=output.strip(), reasoning=reasoning))
        return turns

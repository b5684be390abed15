"""A model's reply → the tool calls it makes, in the output formats of the common model families.

Formats (what each family's own chat template writes for an assistant tool-call turn):
- mistral: `[TOOL_CALLS][{"name": .., "arguments": {..}, "id": ..}, ..]` (v3 tokenizers, Mistral Nemo,
  xlam-hpc's built-in template) and `[TOOL_CALLS]name[ARGS]{..}` repeated once per call, optionally with
  `[CALL_ID]id` before `[ARGS]` (mistral-common's v11+ tokenizers).
- hermes: `<tool_call>\\n{"name": .., "arguments": {..}}\\n</tool_call>` blocks (Hermes 3, Qwen2.5, Qwen3).
- llama3: `{"name": .., "parameters": {..}}` (Llama 3.1/3.2), optionally after `<|python_tag|>`; several
  separated by ';' or newlines.
- json: a plain JSON object or list of objects with "name" and "arguments" (or "parameters").
`arguments` given as a JSON string (OpenAI style) is decoded. Everything is read with `json`, never eval.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STYLES", "ParsedOutput", "parse_tool_calls", "style_for_template"]

STYLES = ("auto", "mistral", "hermes", "llama3", "json")

# end-of-turn markers a reply may still carry when decoded with special tokens kept
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>")
_DECODER = json.JSONDecoder()
_HERMES_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.S)


@dataclass
class ParsedOutput:
    """What a reply holds: `parsed` is False only when a call was attempted but is malformed."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    """[{"name": str, "arguments": dict}] in the order written."""
    parsed: bool = True
    attempted: bool = False
    """The reply tried to call a tool (well-formed or not)."""
    content: str = ""
    """The text besides the calls (the whole reply when there is no call)."""
    error: str | None = None


class _Malformed(Exception):
    pass


def _strip_end(text: str) -> str:
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for marker in _END_MARKERS:
            if text.endswith(marker):
                text, changed = text[: -len(marker)].rstrip(), True
    return text


def _call(obj: Any, *, keys: tuple[str, ...] = ("arguments", "parameters")) -> dict[str, Any]:
    """One decoded call object → {"name", "arguments"}."""
    if not isinstance(obj, dict):
        raise _Malformed(f"a tool call must be a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise _Malformed(f"tool call without a name: {json.dumps(obj, ensure_ascii=False)[:200]}")
    key = next((k for k in keys if k in obj), None)
    return {"name": name, "arguments": _arguments(obj[key] if key else {}, name)}


def _arguments(value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, str):  # OpenAI style: the arguments object as a JSON string
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise _Malformed(f"arguments of '{name}' are not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise _Malformed(f"arguments of '{name}' must be a JSON object, got {type(value).__name__}")
    return value


def _decode_one(text: str, pos: int, what: str) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise _Malformed(f"{what}: invalid JSON ({exc.msg} at char {exc.pos - pos})") from None


def _decode_sequence(text: str, what: str) -> list[Any]:
    """Consecutive JSON values separated by whitespace, ';' or ',' (Llama writes several calls that way)."""
    values, pos = [], 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n;,":
            pos += 1
        if pos >= len(text):
            return values
        value, pos = _decode_one(text, pos, what)
        values.append(value)


def _calls_from_json(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    return [_call(v) for v in items]


def _calls_from_values(values: list[Any]) -> list[dict[str, Any]]:
    """Decoded JSON values → calls: objects, one list of them, or OpenAI's {"tool_calls": [{"function": ..}]}."""
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    if len(values) == 1 and isinstance(values[0], dict) and isinstance(values[0].get("tool_calls"), list):
        values = [v.get("function", v) if isinstance(v, dict) else v for v in values[0]["tool_calls"]]
    return [_call(v) for v in values]


def _parse_mistral(text: str) -> ParsedOutput | None:
    start = text.find("[TOOL_CALLS]")
    if start < 0:
        return None
    content = text[:start].strip()
    body = text[start + len("[TOOL_CALLS]") :]
    if body.lstrip().startswith("["):  # v3: one JSON list of calls
        value, end = _decode_one(body, len(body) - len(body.lstrip()), "[TOOL_CALLS] list")
        if not isinstance(value, list):
            raise _Malformed("[TOOL_CALLS] must be followed by a JSON list")
        rest = body[end:].strip()
        return ParsedOutput(_calls_from_json(value), True, True, "\n".join(p for p in (content, rest) if p))
    calls = []  # v11+: [TOOL_CALLS]name([CALL_ID]id)?[ARGS]{json}, once per call
    for segment in body.split("[TOOL_CALLS]"):
        head, sep, args = segment.partition("[ARGS]")
        if not sep:
            raise _Malformed(f"[TOOL_CALLS]{segment[:80]!r} has no [ARGS]")
        name = head.split("[CALL_ID]")[0].strip()
        if not name:
            raise _Malformed("tool call without a name before [ARGS]")
        value, end = _decode_one(args, len(args) - len(args.lstrip()), f"[ARGS] of '{name}'")
        if args[end:].strip():
            raise _Malformed(f"unexpected text after the arguments of '{name}': {args[end:].strip()[:80]!r}")
        calls.append({"name": name, "arguments": _arguments(value, name)})
    return ParsedOutput(calls, True, True, content)


def _parse_hermes(text: str) -> ParsedOutput | None:
    blocks = list(_HERMES_BLOCK.finditer(text))
    if not blocks:
        return None
    calls = []
    for m in blocks:
        inner = m.group(1).strip()
        value, end = _decode_one(inner, 0, "<tool_call> block")
        if inner[end:].strip():
            raise _Malformed(f"unexpected text inside <tool_call>: {inner[end:].strip()[:80]!r}")
        calls.append(_call(value))
    content = _HERMES_BLOCK.sub("", text).strip()
    return ParsedOutput(calls, True, True, content)


def _parse_llama3(text: str) -> ParsedOutput | None:
    content, tag, body = text.partition("<|python_tag|>")
    if not tag:
        content, body = "", text
        if not body.lstrip().startswith("{"):
            return None
    body = body.strip()
    if not body.startswith("{"):  # Llama's built-in tools (brave_search.call(...)) are not JSON calls
        raise _Malformed(f"<|python_tag|> not followed by a JSON call: {body[:80]!r}")
    return ParsedOutput(_calls_from_values(_decode_sequence(body, "JSON tool call")), True, True, content.strip())


def _parse_json(text: str) -> ParsedOutput | None:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith(("{", "[")):
        return None
    return ParsedOutput(_calls_from_values(_decode_sequence(body, "JSON tool call")), True, True, "")


_PARSERS = {"mistral": _parse_mistral, "hermes": _parse_hermes, "llama3": _parse_llama3, "json": _parse_json}


def parse_tool_calls(text: str, style: str = "auto") -> ParsedOutput:
    """The tool calls in a model reply. `style`: one of STYLES ('auto' tries the markers of every format,
    then plain JSON). A reply without any call attempt is parsed=True, attempted=False, content=the text."""
    if style not in STYLES:
        raise ValueError(f"unknown tool-call style '{style}': choose from {', '.join(STYLES)}")
    body = _strip_end(text)
    order = ("mistral", "hermes", "llama3", "json") if style == "auto" else (style,)
    for name in order:
        try:
            found = _PARSERS[name](body)
        except _Malformed as exc:
            return ParsedOutput([], False, True, body, str(exc))
        if found is not None:
            return found
    return ParsedOutput([], True, False, body, None)


def style_for_template(chat_template: str | dict[str, str] | None, tokenizer_name: str | None = None) -> str:
    """The output format a model family's template teaches ('auto' when neither the template nor the name
    tells)."""
    if isinstance(chat_template, dict):
        chat_template = "\n".join(chat_template.values())
    template = chat_template or ""
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<tool_call>" in template:
        return "hermes"
    if "<|python_tag|>" in template or '"parameters": ' in template:
        return "llama3"
    name = (tokenizer_name or "").lower()
    for key, style in (
        ("mistral", "mistral"),
        ("mixtral", "mistral"),
        ("ministral", "mistral"),
        ("devstral", "mistral"),
        ("qwen", "hermes"),
        ("hermes", "hermes"),
        ("llama", "llama3"),
    ):
        if key in name:
            return style
    return "auto"

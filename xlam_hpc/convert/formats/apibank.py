"""API-Bank dialogues and prompts (https://github.com/AlibabaResearch/DAMO-ConvAI/tree/main/api-bank).

Layouts:
- Raw dialogues `lv1-lv2-samples/*/<Apis>-level-N-K.jsonl`: ONE dialogue per file, one turn per line:
  `{"role": "User"|"AI", "text"}` or `{"role": "API", "api_name", "param_dict", "result": {"output",
  "exception"}}`. The pipeline hands over one line at a time, so on the first line it sees of a file this
  converter reads the whole file itself and emits the dialogue once; the other lines emit nothing. A
  dialogue that cannot be converted is rejected at the line of the failing turn (at the first line when
  the failing line is not valid JSON — the reader reports that line too).
- Processed prompts `test-data/level-*-{api,response}*.json` (`{"file", "id", "instruction", "input",
  "expected_output"}`) and `training-data/lv3-api-train.json` (`{"instruction", "input", "output"}`):
  the dialogue text (`User: ..`, `AI: ..`, `API-Request: [Name(k='v')]->result`) becomes turns and the
  expected output the last assistant turn (a call, or the AI response). Only the "The current year is
  ..." line of the instruction is kept as `task_instruction`: the rest describes the text call syntax
  that structured calls replace.
- `test-data/level-3.json` (`{"requirement", "response", "apis": [{"api_name", "input", "output"}]}`):
  user requirement, one call + tool turn per API, the response as the final turn.

An AI utterance directly followed by an API call is the content of the calling turn; consecutive AI
utterances are merged with a blank line (some embed a `[Call(..)]` in their text, kept as text).
Observations are the API output as JSON text (a plain string as is), or the exception text.
Tools: the API descriptions given (instruction / input / ToolSearcher results), else the bare name with
the argument names used (description "").
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlam_hpc.convert.base import Converter, FunctionSpec, Reject, Trajectory, Turn, make_id, require
from xlam_hpc.convert.common import PY_TYPES, add_call, as_text, join_thought, loads_literal, object_schema, tool_turn
from xlam_hpc.convert.reader import RawRecord

__all__ = ["ApiBank"]

_TOOL_SEARCHER = {
    "name": "ToolSearcher",
    "description": "Searches for relevant tools in library based on the keywords.",
    "input_parameters": {"keywords": {"type": "str", "description": "The keyword to search for."}},
}
_LINE = re.compile(r"^(User|AI|API-Request|Generate API Request|Generate AI Response):\s?(.*)$")
_KWARG = re.compile(r",\s*(?=[A-Za-z_]\w*\s*=)")
_CURRENT = re.compile(r"^The current (?:year|time) is [^{\n]*$", re.M)


def _spec(desc: Mapping[str, Any]) -> FunctionSpec:
    params = desc.get("input_parameters", desc.get("parameters")) or {}
    props = {}
    for arg, spec in params.items() if isinstance(params, Mapping) else ():
        p = spec if isinstance(spec, Mapping) else {}
        t = PY_TYPES.get(str(p.get("type")))
        props[arg] = {**({"type": t} if t else {}), "description": str(p.get("description") or "")}
    name = str(desc.get("name") or desc.get("apiCode"))
    return FunctionSpec(name=name, description=str(desc.get("description") or ""), parameters=object_schema(props))


def _observation(value: Any) -> str:
    return as_text(value, default=lambda o: sorted(o, key=str) if isinstance(o, set) else str(o))


def _loose_value(text: str) -> Any:
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # quotes inside quotes: '[{'name': 'x'}]' or 'John's'
        try:
            inner = ast.literal_eval(text)
            return inner if isinstance(inner, list | dict) else text
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
    return text  # unquoted: location=New York


def _parse_call(text: str) -> tuple[str, dict[str, Any]]:
    """`Name(key='value', ...)` (API-Bank's Python-call syntax) → (name, arguments).

    Parsed with `ast`; calls that are not valid Python (unquoted `location=New York`, quotes inside
    quotes) are split on `, key=` and read value by value, as leniently as API-Bank's own evaluator.
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
            return node.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        pass
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\((.*)\)\s*", text, re.S)
    if m is None:
        raise Reject("unparseable_call", f"API request {text[:100]!r} is not Name(key=value, ...)")
    args: dict[str, Any] = {}
    for part in _KWARG.split(m.group(2)) if m.group(2).strip() else []:
        kv = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*=(.*)", part, re.S)
        if kv is None:
            raise Reject("unparseable_call", f"API request {text[:100]!r}: argument {part[:40]!r} is not key=value")
        args[kv.group(1)] = _loose_value(kv.group(2))
    return m.group(1), args


def _request(text: str) -> tuple[str, dict[str, Any], str | None]:
    """`[Name(k='v')]->result` → (name, arguments, result text or None)."""
    text = text.strip()
    if text.startswith("["):
        for m in re.finditer(r"\)\]->", text):  # the first split whose call parses (args may hold ")]->")
            try:
                name, args = _parse_call(text[1 : m.start() + 1])
            except Reject:
                continue
            return name, args, text[m.end() :]
        if text.endswith("]"):
            return (*_parse_call(text[1:-1]), None)
    raise Reject("unparseable_call", f"API request {text[:100]!r} is not [Name(key=value, ...)]->result")


def _literal(text: str) -> Any:
    """A result or description as data: JSON, else a Python literal (API-Bank prints reprs), else the text."""
    try:
        return loads_literal(text)
    except Reject:
        return text


class _Dialog:
    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.text = ""  # AI utterance(s) not yet emitted: they may introduce a call
        self.tools: dict[str, FunctionSpec] = {}

    def discover(self, desc: Any) -> None:
        for d in desc if isinstance(desc, list) else [desc]:
            if isinstance(d, Mapping) and isinstance(d.get("name") or d.get("apiCode"), str):
                self.tools.setdefault(str(d.get("name") or d.get("apiCode")), _spec(d))

    def flush(self) -> None:
        if self.text:
            self.turns.append(Turn(role="assistant", content=self.text))
            self.text = ""

    def user(self, text: str) -> None:
        self.flush()
        if self.turns and self.turns[-1].role == "user":
            raise Reject("consecutive_turns", "two user turns in a row")
        self.turns.append(Turn(role="user", content=text.strip()))

    def ai(self, text: str) -> None:
        self.text = join_thought(self.text, text)

    def call(self, name: str, args: Any, result: Any = None, *, answered: bool = True) -> None:
        if not isinstance(args, dict):
            raise Reject("arguments_not_object", f"arguments of {name} are {type(args).__name__}, not an object")
        if name == "ToolSearcher":
            self.discover(_TOOL_SEARCHER)
            self.discover(result)
        call = add_call(self.turns, name, args, self.text)
        self.text = ""
        if answered:
            self.turns.append(tool_turn(call, _observation(result)))
        if name not in self.tools:
            self.tools[name] = FunctionSpec(name=name, parameters=object_schema({k: {} for k in args}))

    def text_lines(self, text: str) -> None:
        """Feed `User:`/`AI:`/`API-Request:` lines (continuation lines belong to the previous line)."""
        lines: list[list[str]] = []
        for line in text.split("\n"):
            m = _LINE.match(line)
            if m:
                lines.append([m.group(1), m.group(2)])
            elif lines:
                lines[-1][1] += "\n" + line
            elif line.strip().startswith("{"):
                self.discover(_literal(line.strip()))  # lv3: API descriptions before the dialogue
        for label, body in lines:
            if label == "User":
                self.user(body)
            elif label == "AI":
                self.ai(body)
            elif label == "API-Request":
                name, args, result = _request(body)
                answered = result is not None
                self.call(name, args, _literal(result) if answered else None, answered=answered)

    def close(self) -> list[Turn]:
        self.flush()
        return self.turns


class ApiBank(Converter):
    name = "api-bank"
    description = "API-Bank raw dialogues (one per JSONL file), processed test/train prompts, level-3 chains"
    default_source = "api-bank"

    def __init__(self, source: str | None = None) -> None:
        super().__init__(source)
        self._file: tuple[str, int, Trajectory | None, Reject | None, int] | None = None

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping):
            return 0.0
        if obj.get("role") in ("User", "AI", "API") and ("text" in obj or "api_name" in obj):
            return 0.95
        if {"requirement", "response", "apis"} <= obj.keys():
            return 0.95
        text = f"{obj.get('instruction', '')}{obj.get('expected_output', obj.get('output', ''))}"
        if "input" in obj and ("API-Request:" in text or "API descriptions:" in text):
            return 0.95
        return 0.0

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        if isinstance(obj, Mapping) and "role" in obj:
            return self._dialogue_line(raw)
        dialog = _Dialog()
        source = self.source_for(raw)
        meta: dict[str, Any] = {"file": Path(raw.path).name}
        native, task = None, ""
        if isinstance(obj, Mapping) and "apis" in obj:
            dialog.user(require(obj, "requirement", str))
            for k, api in enumerate(require(obj, "apis", list)):
                out = api.get("output") if isinstance(api, Mapping) else None
                if not isinstance(out, Mapping) or not isinstance(api.get("api_name"), str):
                    raise Reject("bad_api", f"apis[{k}] needs api_name, input and an output object")
                dialog.call(api["api_name"], api.get("input", {}), out.get("exception") or out.get("output"))
            dialog.ai(require(obj, "response", str))
        else:
            instruction = require(obj, "instruction", str)
            head, _, descs = instruction.partition("API descriptions:")
            for line in descs.split("\n"):
                if line.strip():
                    dialog.discover(_literal(line.strip()))
            dialog.text_lines(require(obj, "input", str))
            expected = obj.get("expected_output", obj.get("output"))
            if not isinstance(expected, str):
                raise Reject("missing_key", "missing 'expected_output' (or 'output') string")
            if expected.startswith("API-Request:"):
                name, args, _ = _request(expected.removeprefix("API-Request:"))
                dialog.call(name, args, answered=False)
            else:
                dialog.ai(expected.removeprefix("AI:"))
            current = _CURRENT.search(head)
            task = current.group(0) if current else ""
            if "file" in obj and "id" in obj:
                native = f"{obj['file']}#{obj['id']}"
                meta.update(dialogue=obj["file"], sample_id=obj["id"])
        turns = dialog.close()
        return [
            Trajectory(
                unique_trajectory_id=make_id(source, raw, native),
                source=source,
                task_instruction=task,
                tools=list(dialog.tools.values()),
                conversation=turns,
                meta=meta,
            )
        ]

    def _dialogue_line(self, raw: RawRecord) -> list[Trajectory]:
        if self._file is None or self._file[0] != raw.path:
            self._file = (raw.path, raw.index, *self._read_dialogue(raw))
        _, first, traj, error, error_line = self._file
        if error is not None and raw.index == error_line:
            raise error
        return [traj] if traj is not None and raw.index == first else []

    def _read_dialogue(self, raw: RawRecord) -> tuple[Trajectory | None, Reject | None, int]:
        dialog, lineno = _Dialog(), raw.index
        try:
            with open(raw.path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        turn = json.loads(line)
                    except json.JSONDecodeError:
                        return (
                            None,
                            Reject("incomplete_dialogue", f"dialogue line {lineno} is not valid JSON"),
                            raw.index,
                        )
                    self._dialogue_turn(dialog, turn)
        except Reject as exc:
            return None, Reject(exc.reason, f"dialogue line {lineno}: {exc}"), lineno
        except (OSError, UnicodeDecodeError) as exc:
            return None, Reject("unreadable_file", f"cannot re-read the dialogue file: {exc}"), raw.index
        path = Path(raw.path)
        source = self.source_for(raw)
        level = re.search(r"level-(\d+)-(\d+)$", path.stem)
        meta = {
            "file": path.name,
            "setting": path.parent.name,
            "level": int(level.group(1)) if level else None,
        }
        traj = Trajectory(
            unique_trajectory_id=make_id(source, raw, path.parent.name),
            source=source,
            tools=list(dialog.tools.values()),
            conversation=dialog.close(),
            meta=meta,
        )
        return traj, None, raw.index

    @staticmethod
    def _dialogue_turn(dialog: _Dialog, turn: Any) -> None:
        role = turn.get("role") if isinstance(turn, Mapping) else None
        if role == "User":
            dialog.user(require(turn, "text", str))
        elif role == "AI":
            dialog.ai(require(turn, "text", str))
        elif role == "API":
            result = require(turn, "result", dict)
            exc = result.get("exception")
            dialog.call(require(turn, "api_name", str), require(turn, "param_dict", dict), exc or result.get("output"))
        else:
            raise Reject("unknown_role", f"role should be User, AI or API, got {role!r}")

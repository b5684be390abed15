"""ToolBench (OpenBMB, https://github.com/OpenBMB/ToolBench): DFSDT answers and ToolLLaMA conversations.

Layouts:
- Raw answer files `answer/G*_answer/<qid>_ChatGPT_DFS_woFilter_w2.json` (also the older `raw_answer_v1/`
  DFS and CoT@1 files, which carry the same `answer_generation`): one JSON document per query,
  `{"win", "tree"|"trys", ..., "answer_generation": {"valid_data", "final_answer", "finish_type",
  "function": [OpenAI function specs incl. "Finish"], "train_messages": [[msg, ...], ...], "query"}}`.
  `train_messages` are cumulative prefixes of one successful chain; the last one is the whole chain, in
  OpenAI legacy function-calling (`function_call` a dict, or a Python-repr string whose `arguments` is a
  JSON string; assistant content None or "None" when it only calls).
- ToolLLaMA processed `toolllama_processed/*.json`: `{"id": "Step N: <query>", "conversations":
  [{"from": system|user|assistant|function, "value"}]}`; assistant values are
  `Thought: ..\nAction: <api>\nAction Input: <json>` text, the system prompt lists the APIs as a Python
  repr after "Specifically, you have access to the following APIs:". Each "Step N" record is a prefix of
  the same chain. Cumulative prefixes are not trained N times: when a record repeats the previous record
  of the file (same query) and adds turns, the repeated assistant turns get `train: false`, so only the
  new turns are trained (meta["untrained_prefix_turns"] = how many turns were repeated). Records are kept
  (not collapsed), so ids and counts match the file; prefixes are recognized between consecutive records.
- Query files `instruction/G*_query.json` have no trajectory: rejected as `no_trajectory`.

Thoughts (`Thought:` text, assistant content next to a function_call) are the turn's `reasoning`. The
terminal `Finish` call is not kept as a tool: it becomes the final assistant turn whose content is its
`final_answer` (ToolBench shows only that to the user); a thought written with the Finish call is that
turn's reasoning. A give-up (`give_up_and_restart`, no final_answer) ends with that thought as content.
Consecutive assistant messages (a thought message followed by the call) are merged into one turn. The
DFSDT "This is not the first time you try this task..." user message of a restarted chain is kept as a
user turn (it is part of the chain ToolLLaMA trains on).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlam_hpc.convert.base import Converter, FunctionSpec, Reject, Trajectory, Turn, make_id, require, tool_from_openai
from xlam_hpc.convert.common import add_call, join_thought, json_arguments
from xlam_hpc.convert.reader import RawRecord

__all__ = ["ToolBench"]

_APIS_MARKER = "Specifically, you have access to the following APIs:"
_REACT = re.compile(r"^\s*Thought:(?P<thought>.*?)\nAction:\s*(?P<action>[^\n]*)\nAction Input:(?P<input>.*)$", re.S)


def _tool(spec: Any) -> FunctionSpec:
    fn = tool_from_openai(spec)
    fn.parameters = {k: v for k, v in fn.parameters.items() if k != "optional"}
    return fn


def _tools(specs: Any, where: str) -> list[FunctionSpec]:
    if not isinstance(specs, list):
        raise Reject("wrong_type", f"{where} should be a list of function specs")
    return [_tool(s) for s in specs if not (isinstance(s, Mapping) and s.get("name") == "Finish")]


def _arguments(text: Any, where: str) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise Reject("invalid_arguments", f"{where}: arguments should be a JSON string")
    args = json_arguments(text, where, "invalid_arguments")
    if not isinstance(args, dict):
        raise Reject("invalid_arguments", f"{where}: arguments are {type(args).__name__}, not an object")
    return args


def _function_call(fc: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(fc, str):  # Python repr of {'name': ..., 'arguments': '<json>'}
        try:
            fc = ast.literal_eval(fc)
        except (ValueError, SyntaxError):
            raise Reject("unparseable_function_call", f"{where}: function_call is not a Python literal") from None
    if not isinstance(fc, Mapping) or not isinstance(fc.get("name"), str):
        raise Reject("unparseable_function_call", f"{where}: function_call has no name")
    return fc["name"], _arguments(fc.get("arguments", "{}"), where)


def _text(value: Any) -> str:
    return "" if value is None or value == "None" else str(value).strip()


class _Chain:
    """Builds the conversation of one chain; shared by both layouts."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.pending_thought = ""
        self.final_meta: dict[str, Any] = {}
        self.finished = False

    def user(self, text: str) -> None:
        self._flush()
        self.turns.append(Turn(role="user", content=text))

    def _flush(self) -> None:
        if self.pending_thought:  # an assistant text message that made no call
            self.turns.append(Turn(role="assistant", content=self.pending_thought))
            self.pending_thought = ""

    def thought(self, text: str) -> None:
        self.pending_thought = join_thought(self.pending_thought, text)

    def call(self, i: int, name: str, args: dict[str, Any], thought: str) -> str | None:
        """Append an assistant call (or the final answer for Finish); the call id, None for Finish."""
        self.thought(thought)
        thought, self.pending_thought = self.pending_thought, ""
        if name == "Finish":
            answer = args.get("final_answer")
            content = answer.strip() if isinstance(answer, str) and answer.strip() else thought
            if not content:
                raise Reject("no_final_answer", f"message {i}: Finish without final_answer or thought")
            self.final_meta["return_type"] = args.get("return_type")
            self.turns.append(Turn(role="assistant", content=content, reasoning=thought if content != thought else ""))
            self.finished = True
            return None
        call = add_call(self.turns, name, args)
        self.turns[-1].reasoning = thought
        return call.id

    def observation(self, i: int, call_id: str | None, name: str, text: str) -> None:
        if call_id is None or self.pending_thought:
            raise Reject("orphan_observation", f"message {i}: function result without a preceding call")
        self.turns.append(Turn(role="tool", tool_call_id=call_id, name=name, content=text))

    def close(self) -> list[Turn]:
        self._flush()
        return self.turns


def _turn_key(turn: Turn) -> tuple[Any, ...]:
    """What makes two turns the same turn, the train flag aside."""
    calls = tuple((c.id, c.name, repr(c.arguments)) for c in turn.tool_calls)
    return (turn.role, turn.content, turn.reasoning, calls, turn.tool_call_id, turn.name)


class ToolBench(Converter):
    name = "toolbench"
    description = "ToolBench DFSDT/CoT answer files (answer_generation.train_messages) and ToolLLaMA conversations"
    default_source = "toolbench"

    def __init__(self, source: str | None = None) -> None:
        super().__init__(source)
        self._previous: tuple[str, str, list[tuple[Any, ...]]] | None = None
        """(file, query, turn keys) of the last ToolLLaMA record converted: cumulative "Step N" prefixes."""

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping):
            return 0.0
        ag = obj.get("answer_generation")
        if isinstance(ag, Mapping) and ("train_messages" in ag or "valid_data" in ag):
            return 0.95
        convs = obj.get("conversations")
        if isinstance(obj.get("id"), str) and isinstance(convs, list) and convs and isinstance(convs[0], Mapping):
            froms = {c.get("from") for c in convs if isinstance(c, Mapping)}
            if "function" in froms or (convs[0].get("from") == "system" and "AutoGPT" in str(convs[0].get("value"))):
                return 0.9
        if "query_id" in obj and "api_list" in obj:
            return 0.1  # a query without trajectory: ours, but not convertible
        return 0.0

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        if isinstance(obj, Mapping) and "answer_generation" in obj:
            return [self._answer(raw, obj)]
        if isinstance(obj, Mapping) and "conversations" in obj:
            return [self._toolllama(raw, obj)]
        if isinstance(obj, Mapping) and "query_id" in obj:
            raise Reject("no_trajectory", f"query {obj['query_id']} has no trajectory (instruction file)")
        if isinstance(obj, Mapping) and "trys" in obj:
            raise Reject("unsupported_layout", "CoT answer file without answer_generation")
        raise Reject("unsupported_layout", "neither answer_generation nor conversations")

    def _answer(self, raw: RawRecord, obj: Mapping[str, Any]) -> Trajectory:
        ag = require(obj, "answer_generation", dict)
        if ag.get("valid_data") is False:
            raise Reject("invalid_data", "answer_generation.valid_data is false (no usable chain)")
        chains = ag.get("train_messages")
        if not isinstance(chains, list) or not chains or not isinstance(chains[-1], list):
            raise Reject("no_train_messages", "answer_generation.train_messages is missing or empty")
        chain = _Chain()
        instruction = ""
        call_id: str | None = None
        for i, msg in enumerate(chains[-1]):
            if not isinstance(msg, Mapping):
                raise Reject("bad_message", f"message {i} is not an object")
            role = msg.get("role")
            if role == "system" and i == 0:
                instruction = _text(msg.get("content"))
            elif role == "user":
                chain.user(_text(msg.get("content")))
            elif role == "assistant":
                if msg.get("function_call"):
                    name, args = _function_call(msg["function_call"], f"message {i}")
                    call_id = chain.call(i, name, args, _text(msg.get("content")))
                else:
                    chain.thought(_text(msg.get("content")))
            elif role == "function":
                chain.observation(i, call_id, str(msg.get("name") or ""), _text(msg.get("content")))
                call_id = None
            else:
                raise Reject("unknown_role", f"message {i}: unexpected role {role!r}")
        source = self.source_for(raw)
        path = Path(raw.path)
        meta: dict[str, Any] = {
            "file": path.name,
            "group": path.parent.name,
            "win": obj.get("win"),
            "valid_data": ag.get("valid_data"),
            "finish_type": ag.get("finish_type"),
            "layout": "cot" if "trys" in obj else "dfs",
            "finished": chain.finished,
            **chain.final_meta,
        }
        return Trajectory(
            unique_trajectory_id=make_id(source, raw, path.parent.name),
            source=source,
            task_instruction=instruction,
            tools=_tools(ag.get("function", []), "answer_generation.function"),
            conversation=chain.close(),
            meta=meta,
        )

    def _toolllama(self, raw: RawRecord, obj: Mapping[str, Any]) -> Trajectory:
        native = require(obj, "id", str)
        convs = require(obj, "conversations", list)
        chain = _Chain()
        instruction, tools = "", []
        call: tuple[str | None, str] = (None, "")
        for i, msg in enumerate(convs):
            if not isinstance(msg, Mapping) or not isinstance(msg.get("value"), str):
                raise Reject("bad_message", f"turn {i}: not an object with a string 'value'")
            role, value = msg.get("from"), msg["value"]
            if role == "system" and i == 0:
                instruction, tools = self._system(value)
            elif role == "user":
                chain.user(value.strip())
            elif role == "assistant":
                m = _REACT.match(value)
                if m is None:
                    chain.thought(value.strip())
                    continue
                name = m.group("action").strip()
                args = _arguments(m.group("input").strip(), f"turn {i}")
                call = (chain.call(i, name, args, m.group("thought").strip()), name)
            elif role == "function":
                chain.observation(i, call[0], call[1], value)
                call = (None, "")
            else:
                raise Reject("unknown_role", f"turn {i}: unexpected role {role!r}")
        source = self.source_for(raw)
        step = re.match(r"^Step (\d+):", native)
        turns = chain.close()
        meta: dict[str, Any] = {
            "original_id": native,
            "file": Path(raw.path).name,
            "step": int(step.group(1)) if step else None,
            "layout": "toolllama",
            "finished": chain.finished,
            **chain.final_meta,
        }
        query = native[step.end() :].strip() if step else native
        keys = [_turn_key(t) for t in turns]
        prev = self._previous
        if (
            prev is not None
            and prev[:2] == (raw.path, query)
            and len(prev[2]) < len(keys)
            and keys[: len(prev[2])] == prev[2]
        ):
            for t in turns[: len(prev[2])]:  # trained in the previous record already
                if t.role == "assistant":
                    t.train = False
            meta["untrained_prefix_turns"] = len(prev[2])
        self._previous = (raw.path, query, keys)
        return Trajectory(
            unique_trajectory_id=make_id(source, raw),
            source=source,
            task_instruction=instruction,
            tools=tools,
            conversation=turns,
            meta=meta,
        )

    @staticmethod
    def _system(text: str) -> tuple[str, list[FunctionSpec]]:
        """(instruction, tools): the API list after the marker becomes tools when it parses."""
        head, sep, apis = text.partition(_APIS_MARKER)
        if not sep:
            return text, []
        try:
            specs = ast.literal_eval(apis.strip())
            return head.rstrip(), _tools(specs, "system prompt API list")
        except (ValueError, SyntaxError, Reject):
            return text, []

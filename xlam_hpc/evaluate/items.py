"""Evaluation items: one question for the model, with the calls it should make.

From unified data (`items_from_unified`): one item per trained assistant turn that calls tools (the prefix
is everything before that turn), plus an "irrelevance" item per trained assistant turn that answers without
a call while tools are available (the model should not call anything there). BFCL questions become items
in bfcl.py.

`messages` keep the unified turn layout (role, content, tool_calls [{id, name, arguments}], tool_call_id,
name), which is what the collate chat templates render after `to_hf_messages`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from xlam_hpc.errors import DataError
from xlam_hpc.schema import Preference, RecordInvalid, Trajectory, Turn, decode_record

__all__ = ["EvalItem", "item_turns", "items_from_record", "items_from_unified", "read_records"]

Kind = Literal["call", "irrelevance"]


@dataclass
class EvalItem:
    """One question: the conversation prefix a model answers, and what a correct answer is."""

    id: str
    source: str
    """Dataset source, or the bench name (e.g. 'bfcl-simple')."""
    category: str
    """simple (one gold call) | parallel (several) | irrelevance (none) for unified data; BFCL's own else."""
    kind: Kind
    """'call': the answer calls tools; 'irrelevance': the right answer calls none."""
    system: str
    tools: list[dict[str, Any]]
    """OpenAI function specs {name, description, parameters} (JSON-schema types), as chat templates take them."""
    messages: list[dict[str, Any]]
    """The conversation prefix in the unified/OpenAI layout the collate chat templates render."""
    gold: list[dict[str, Any]]
    """Expected calls {"name", "arguments"}; [] for irrelevance."""
    possible_answer: list[dict[str, Any]] | None = None
    """BFCL ground truth [{func_name: {param: [allowed values]}}]; None for unified data."""
    functions: list[dict[str, Any]] | None = field(default=None)
    """BFCL's original function docs (BFCL type names), which its AST checker reads; None for unified data."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _category(gold: list[dict[str, Any]]) -> str:
    return "irrelevance" if not gold else ("simple" if len(gold) == 1 else "parallel")


def _turn_dict(turn: Turn) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(turn)
    out.pop("train", None)
    return out


def items_from_record(rec: Trajectory | Preference) -> list[EvalItem]:
    """The items of one record: its trained assistant turns with a call, and (when it has tools) those
    without one. A DPO pair gives one item: its prompt, answered by the chosen turn."""
    if isinstance(rec, Preference):
        answers = [(len(rec.conversation), rec.chosen)]
        turns = [*rec.conversation, rec.chosen]
    else:
        turns = rec.conversation
        answers = [(i, t) for i, t in enumerate(turns) if t.role == "assistant" and t.train]
    tools = [msgspec.to_builtins(f) for f in rec.tools]
    out = []
    for index, turn in answers:
        if not turn.tool_calls and not tools:
            continue  # plain chat without tools: nothing to evaluate about calling
        gold = [{"name": c.name, "arguments": c.arguments} for c in turn.tool_calls]
        out.append(
            EvalItem(
                id=f"{rec.unique_trajectory_id}#{index}",
                source=rec.source,
                category=_category(gold),
                kind="call" if gold else "irrelevance",
                system=rec.task_instruction,
                tools=tools,
                messages=[_turn_dict(t) for t in turns[:index]],
                gold=gold,
            )
        )
    return out


def read_records(path: str | Path) -> Iterator[Trajectory | Preference]:
    """The validated records of a unified JSONL file or a shard directory, in file / manifest order."""
    path = Path(path)
    if path.is_dir():
        yield from _shard_records(path)
        return
    if not path.is_file():
        raise DataError(f"{path}: no such file or shard directory")
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield decode_record(line)
            except RecordInvalid as exc:
                raise DataError(f"{path}:{lineno}: not a valid unified record ({exc})") from None


def _shard_records(folder: Path) -> Iterator[Trajectory | Preference]:
    from xlam_hpc.shard import ShardReader

    with ShardReader(folder) as reader:
        for source, n in sorted(reader.sources.items()):
            for index in range(n):
                yield reader.record(source, index)


def items_from_unified(paths: list[str], limit: int | None = None) -> list[EvalItem]:
    """Items of every file / shard directory in order; with `limit`, the first `limit` of each path.

    Item ids are `<unique_trajectory_id>#<turn index>`; an id seen twice (the same record in two inputs) is an
    error, as results are keyed by it."""
    items: list[EvalItem] = []
    where: dict[str, str] = {}
    for path in paths:
        found = 0
        for rec in read_records(path):
            for item in items_from_record(rec):
                if limit is not None and found >= limit:
                    break
                if item.id in where:
                    raise DataError(f"{path}: item {item.id} also comes from {where[item.id]} (duplicate record id)")
                where[item.id] = str(path)
                items.append(item)
                found += 1
            if limit is not None and found >= limit:
                break
        if found == 0:
            raise DataError(f"{path}: no evaluation items (no assistant turn with tools available)")
    return items


def item_turns(item: EvalItem) -> tuple[str, list[Turn]]:
    """The system prompt and prefix turns of an item, as schema Turns (what the collate templates render).

    Accepts the OpenAI message layout too ({"type": "function", "function": {...}} calls, system messages),
    which BFCL questions may use."""
    system = item.system
    turns: list[Turn] = []
    for k, message in enumerate(item.messages):
        msg = dict(message)
        if msg.get("role") == "system":
            system = "\n\n".join(s for s in (system, str(msg.get("content") or "")) if s)
            continue
        calls = msg.get("tool_calls")
        if calls:
            msg["tool_calls"] = [_flat_call(c, j) for j, c in enumerate(calls)]
        msg = {key: value for key, value in msg.items() if value is not None and key in Turn.__struct_fields__}
        try:
            turns.append(msgspec.convert(msg, type=Turn))
        except msgspec.ValidationError as exc:
            raise DataError(f"item {item.id}: message {k} is not a conversation turn ({exc})") from None
    return system, turns


def _flat_call(call: dict[str, Any], j: int) -> dict[str, Any]:
    fn = call.get("function")
    if isinstance(fn, dict):  # OpenAI layout
        args = fn.get("arguments", {})
        if isinstance(args, str):
            args = json.loads(args) if args.strip() else {}
        return {"id": call.get("id") or f"call_{j}", "name": fn.get("name", ""), "arguments": args}
    return {"id": call.get("id") or f"call_{j}", "name": call.get("name", ""), "arguments": call.get("arguments", {})}

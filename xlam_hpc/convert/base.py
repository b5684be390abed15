"""The converter contract: one small class per source format, registered in `xlam_hpc.convert.CONVERTERS`.

A converter turns one located raw record into zero or more unified records (ToolAlpaca toolsets and
ToolBench answer trees hold several trajectories). It raises `Reject` for a record it cannot convert;
the pipeline validates every emitted record, so converters stay short and never re-check the schema.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from xlam_hpc.convert.reader import RawRecord
from xlam_hpc.schema import FunctionSpec, Preference, ToolCall, Trajectory, Turn

__all__ = [
    "Converter",
    "Reject",
    "make_id",
    "parse_json_field",
    "record_id",
    "require",
    "tool_from_openai",
]


class Reject(ValueError):
    """A raw record that cannot be converted; `reason` is a stable code counted in the summary.

    Raise it to reject the whole raw record. A converter that makes several records from one raw record
    (a ToolAlpaca toolset, a few-shot prompt file) may instead *yield* `Reject(..., item=k)` for the k-th
    one: that one is logged as '<position> item k' and the others are kept.
    """

    def __init__(self, reason: str, message: str, *, item: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.item = item


class Converter(ABC):
    """Base class of a source-format converter."""

    name: ClassVar[str]
    """The `--format` name."""
    description: ClassVar[str]
    default_source: ClassVar[str]
    """`source` of emitted records unless `--source` is given."""

    def __init__(self, source: str | None = None) -> None:
        self.source_override = source

    def source_for(self, raw: RawRecord) -> str:
        """The record's source name (override > format-specific choice)."""
        return self.source_override or self.default_source

    @classmethod
    @abstractmethod
    def sniff(cls, obj: Any) -> float:
        """Confidence in [0, 1] that a raw object is in this format (used by `--format auto`)."""

    @abstractmethod
    def convert(self, raw: RawRecord) -> Iterable[Trajectory | Preference | Reject]:
        """Unified records of one raw record. Raise Reject for records that cannot be converted."""


def require(obj: Any, key: str, kind: type | tuple[type, ...] = object) -> Any:
    """obj[key] with a Reject naming the key when it is missing or of the wrong type."""
    if not isinstance(obj, Mapping):
        raise Reject("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise Reject("missing_key", f"missing required key '{key}' (keys: {sorted(obj)[:12]})")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise Reject("wrong_type", f"key '{key}' should be {names}, got {type(value).__name__}")
    return value


def parse_json_field(value: Any, key: str) -> Any:
    """A field that some datasets store as a JSON string (xLAM `tools`/`answers`); invalid JSON rejects."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise Reject("invalid_json_field", f"'{key}' is not valid JSON: {exc.msg} (column {exc.colno})") from None


def make_id(source: str, raw: RawRecord, native: Any = None, suffix: str | None = None) -> str:
    """Deterministic `unique_trajectory_id`: '<source>---<file stem>---<native id or position>[---suffix]'."""
    key = str(native) if native not in (None, "") else str(raw.index)
    parts = [source, Path(raw.path).stem, key]
    if suffix is not None:
        parts.append(suffix)
    return "---".join(parts)


def record_id(source: str, raw: RawRecord) -> str:
    """The record's own non-empty `id` as the `unique_trajectory_id`, else `make_id(source, raw)`."""
    native = raw.obj.get("id")
    return str(native) if native not in (None, "") else make_id(source, raw)


def tool_from_openai(spec: Mapping[str, Any]) -> FunctionSpec:
    """FunctionSpec from `{name, description, parameters}` or `{type: function, function: {...}}`."""
    fn = spec.get("function", spec) if isinstance(spec, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise Reject("bad_tool_spec", f"tool spec without a name: {json.dumps(spec)[:200]}")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(params, Mapping):
        raise Reject("bad_tool_spec", f"parameters of tool '{fn['name']}' are not an object")
    return FunctionSpec(name=fn["name"], description=str(fn.get("description") or ""), parameters=dict(params))


# Re-exported for converter modules: they build these and nothing else.
__all__ += ["FunctionSpec", "Preference", "ToolCall", "Trajectory", "Turn"]

"""Config plumbing shared by every stage: dataclasses ⇄ dicts ⇄ YAML, dotted overrides, fingerprints.

Each stage owns one `kw_only` dataclass (ShardConfig, StreamConfig, CollateConfig, TrainConfig, ...).
Type checking is msgspec's (`msgspec.convert` understands dataclasses, unions, literals); the only
hand-written part is the unknown-key check, because msgspec silently ignores extra keys on dataclasses
and we want the error to list the valid keys with a close-match suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from xlam_hpc.errors import ConfigError

__all__ = [
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "fingerprint",
    "load_yaml",
    "parse_override",
    "save_yaml",
]

T = TypeVar("T")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside `tp` (itself, or the one member of `X | None`), else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if len(found) == 1:
            return found[0]
    return None


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{where}{key}'.{hint} Valid keys{' of ' + where.rstrip('.') if where else ''}: "
                + ", ".join(names)
            )
        sub = _dataclass_in(hints[key])
        if sub is not None and isinstance(value, Mapping):
            _check_keys(sub, value, f"{where}{key}.")


def config_from_dict(cls: type[T], data: Mapping[str, Any] | None, *, source: str = "config") -> T:
    """Build `cls` from a nested dict; unknown keys and wrong types raise ConfigError naming `source`."""
    data = dict(data or {})
    _check_keys(cls, data, "")
    try:
        return msgspec.convert(data, type=cls, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int`, got `str` - at `$.train.max_steps`".
        raise ConfigError(f"{source}: {_explain(cls, str(exc))}") from None
    except (TypeError, ValueError) as exc:  # raised by __post_init__ checks
        raise ConfigError(f"{source}: {exc}") from None


_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<path>[^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _type_at(cls: Any, path: str) -> Any:
    """The declared type at a msgspec path such as '.collate.mode' or '.data.shards[0]' (None if unknown)."""
    tp = cls
    for key, index in _STEP.findall(path):
        members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        nxt = None
        for m in members:
            if key and dataclasses.is_dataclass(m):
                nxt = typing.get_type_hints(m).get(key)
            elif typing.get_origin(m) in (list, tuple, Sequence) and index:
                nxt = typing.get_args(m)[0]
            elif typing.get_origin(m) in (dict, Mapping) and key:
                nxt = typing.get_args(m)[1]
            if nxt is not None:
                break
        if nxt is None:
            return None
        tp = nxt
    return tp


def _literal_values(tp: Any) -> list[Any]:
    """The allowed values of a Literal (also inside `Literal[...] | bool` and Optional)."""
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        values = [v for a in typing.get_args(tp) for v in _literal_values(a)]
        values += [b for a in typing.get_args(tp) if a is bool for b in (True, False)]
        values += [None for a in typing.get_args(tp) if a is type(None)]
        return values if any(not isinstance(v, bool | None) for v in values) else []
    return []


def _explain(cls: Any, message: str) -> str:
    """msgspec's message, with the valid values (and a close match) when the field is an enum (Literal):
    "Invalid enum value 'trajectroy' - at `$.collate.mode`" → "collate.mode: invalid value 'trajectroy';
    valid values: 'trajectory', 'prompt_answer'. Did you mean 'trajectory'?"."""
    m = _AT.match(message)
    if m is None:
        return message
    path = m["path"]
    values = _literal_values(_type_at(cls, path))
    if not values:
        return message
    got = re.search(r"value '(.*)'$", m["what"]) or re.search(r"got `(\w+)`", m["what"])
    shown = f"'{got[1]}'" if got and "value" in m["what"] else (f"of type {got[1]}" if got else "")
    valid = ", ".join(json.dumps(v) if not isinstance(v, str) else f"'{v}'" for v in values)
    close = difflib.get_close_matches(got[1] if got else "", [str(v) for v in values], n=1)
    hint = f" Did you mean '{close[0]}'?" if close and "value" in m["what"] else ""
    return f"{path.lstrip('.')}: invalid value{' ' + shown if shown else ''}; valid values: {valid}.{hint}"


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON/YAML-ready dict of a config dataclass (every field, defaults included)."""
    # msgspec.to_builtins leaves out fields that equal their defaults; a resolved config must show them.
    return msgspec.to_builtins(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg)


def fingerprint(obj: Any, *, length: int = 16) -> str:
    """Stable short hash of any JSON-able object (dicts hashed with sorted keys)."""
    data = config_to_dict(obj) if dataclasses.is_dataclass(obj) else msgspec.to_builtins(obj)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-5' → (['train', 'lr'], 1e-05). Values are YAML scalars/flow collections."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.lr=1e-5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # keep the literal string: values with quotes or colons stay text
    # PyYAML (YAML 1.1) reads '1e-5' as a string (it wants '1.0e-5'); users mean a float.
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        value = float(value)
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted key=value overrides to a nested dict (returns a new dict)."""
    out = json.loads(json.dumps(data, default=str)) if data else {}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file (and line for syntax errors)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a YAML file (give the recipe file, e.g. {p}/recipe.yaml)")
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:256]:
            why = "the file is UTF-16 text, not UTF-8; convert it: iconv -f UTF-16 -t UTF-8 IN > OUT"
        else:
            why = f"not UTF-8 at byte {exc.start}"
        raise ConfigError(f"{p}:{line}: cannot read ({why})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def save_yaml(data: Mapping[str, Any], path: str | Path) -> None:
    """Write YAML atomically (temp file + rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    tmp.replace(p)

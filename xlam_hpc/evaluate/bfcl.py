"""Berkeley Function Calling Leaderboard (BFCL v4) single-turn categories as evaluation items.

The questions and ground truth come from the bfcl-eval wheel (data files inside it, read with zipfile): the
wheel is downloaded once (`pip download --no-deps`), never installed and never imported — its dependency
tree is large and the checker it ships is reimplemented in score.py. The version is pinned in
constraints.txt (bfcl-eval==...); `make bfcl-data` fetches it into .cache/bfcl/.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError, DataError
from xlam_hpc.evaluate.items import EvalItem

__all__ = ["BFCL_CATEGORIES", "BFCL_VERSION", "bfcl_wheel", "first_answer_calls", "load_bfcl", "to_openai_tool"]

BFCL_CATEGORIES = {
    "bfcl-simple": "simple_python",
    "bfcl-multiple": "multiple",
    "bfcl-parallel": "parallel",
    "bfcl-parallel-multiple": "parallel_multiple",
    "bfcl-live-simple": "live_simple",
    "bfcl-live-multiple": "live_multiple",
    "bfcl-live-parallel": "live_parallel",
    "bfcl-live-parallel-multiple": "live_parallel_multiple",
    "bfcl-irrelevance": "irrelevance",
    "bfcl-live-irrelevance": "live_irrelevance",
}
"""Bench name (`xlam-hpc eval --bench`) → BFCL v4 category (file bfcl_eval/data/BFCL_v4_<category>.json)."""

BFCL_VERSION = "2026.3.23"
"""The bfcl-eval version used when constraints.txt (the repo's pin file) is not at hand."""

_REPO = Path(__file__).resolve().parents[2]
_DATA = "bfcl_eval/data"

# bfcl_eval/constants/type_mappings.py GORILLA_TO_OPENAPI: BFCL type names → JSON-schema ones
_TO_JSON_SCHEMA = {
    "integer": "integer",
    "number": "number",
    "float": "number",
    "string": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "dict": "object",
    "object": "object",
    "tuple": "array",
    "any": "string",
}


def user_cache_dir() -> Path:
    """xlam-hpc's user cache, as collate.tokenizer.cache_dir (importing collate would pull in torch):
    $XLAM_HPC_CACHE, else $XDG_CACHE_HOME/xlam-hpc, else ~/.cache/xlam-hpc."""
    if os.environ.get("XLAM_HPC_CACHE"):
        return Path(os.environ["XLAM_HPC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xlam-hpc"


def pinned_version() -> str:
    """bfcl-eval's version from the repo's constraints.txt, else BFCL_VERSION."""
    pins = _REPO / "constraints.txt"
    if pins.is_file():
        for line in pins.read_text(encoding="utf-8").splitlines():
            name, sep, version = line.strip().partition("==")
            if sep and name.strip().lower().replace("_", "-") == "bfcl-eval":
                return version.strip()
    return BFCL_VERSION


def _cached(folder: Path, version: str) -> Path | None:
    found = sorted(folder.glob(f"bfcl_eval-{version}-*.whl"))
    return found[-1] if found else None


def bfcl_wheel(cache_dir: str | Path | None = None) -> Path:
    """The bfcl-eval wheel: $XLAM_HPC_BFCL_WHEEL, else a cached copy (cache_dir when given, else the repo's
    .cache/bfcl or ~/.cache/xlam-hpc/bfcl), else downloaded with `pip download --no-deps` into cache_dir (or
    the user cache). Raises DataError when it cannot be had (offline)."""
    env = os.environ.get("XLAM_HPC_BFCL_WHEEL")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"XLAM_HPC_BFCL_WHEEL={env}: no such file")
        return Path(env)
    version = pinned_version()
    shipped = Path(sys.prefix) / "share" / "bfcl"  # the container image's copy (Dockerfile)
    folders = (
        [Path(cache_dir)] if cache_dir is not None else [_REPO / ".cache" / "bfcl", shipped, user_cache_dir() / "bfcl"]
    )
    for folder in folders:
        found = _cached(folder, version)
        if found is not None:
            return found
    target = folders[0] if cache_dir is not None else folders[-1]
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(target), f"bfcl-eval=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = _cached(target, version)
    if proc.returncode != 0 or found is None:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel written"]
        raise DataError(
            f"cannot fetch the BFCL data (bfcl-eval=={version}) into {target}: {detail[0]}. Offline? Run "
            "`make bfcl-data` where PyPI is reachable and copy .cache/bfcl/, or set XLAM_HPC_BFCL_WHEEL to the wheel"
        )
    return found


def _json_schema(node: dict[str, Any]) -> None:
    # model_handler/utils.py _cast_to_openai_type: untyped → string, float keeps a hint the model reads
    kind = node.get("type")
    if kind == "float":
        node["format"] = "float"
        node["description"] = node.get("description", "") + " This is a float type value."
    node["type"] = _TO_JSON_SCHEMA.get(kind, "string") if isinstance(kind, str) else "string"
    for child in (node.get("properties") or {}).values():
        if isinstance(child, dict):
            _json_schema(child)
    if isinstance(node.get("items"), dict):
        _json_schema(node["items"])


def to_openai_tool(doc: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function doc as the OpenAI function spec chat templates take (BFCL's convert_to_tool for FC
    models; names keep their '.', as BFCL does for local chat-template models)."""
    doc = copy.deepcopy(doc)
    params = doc.get("parameters") or {}
    params["type"] = "object"
    for child in (params.get("properties") or {}).values():
        _json_schema(child)
    return {"name": doc["name"], "description": doc.get("description", ""), "parameters": params}


def _pick(allowed: list[Any], required: bool) -> tuple[bool, Any]:
    # "" among the allowed values marks a parameter that may be left out: leave it out unless the function
    # doc requires it (some BFCL rows list "" first for a required parameter), else the first real value
    # ("" itself when it is the only one: it is then an allowed string)
    if not required and "" in allowed:
        return False, None
    values = [v for v in allowed if v != ""] or allowed
    return (True, values[0]) if values else (False, None)


def _first_dict(answer: dict[str, list[Any]]) -> dict[str, Any]:
    out = {}
    for key, allowed in answer.items():
        keep, value = _pick(allowed, required=False)
        if keep:
            out[key] = value
    return out


def first_answer_calls(possible_answer: list[dict[str, Any]], functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ground truth as calls {"name", "arguments"}: for each parameter its first allowed value, or nothing
    when it may be left out ("" allowed) and the doc does not require it; dict and list-of-dict values are
    built the same way, key by key."""
    docs = {f["name"]: f for f in functions}
    calls = []
    for answer in possible_answer:
        name, params = next(iter(answer.items()))
        doc_params = docs.get(name, {}).get("parameters", {})
        props, required = doc_params.get("properties", {}), set(doc_params.get("required", []))
        args: dict[str, Any] = {}
        for param, allowed in params.items():
            keep, value = _pick(allowed, param in required)
            if not keep:
                continue
            spec = props.get(param, {})
            if spec.get("type") == "dict" and isinstance(value, dict):
                value = _first_dict(value)
            elif (
                spec.get("type") == "array" and spec.get("items", {}).get("type") == "dict" and isinstance(value, list)
            ):
                value = [_first_dict(v) if isinstance(v, dict) else v for v in value]
            args[param] = value
        calls.append({"name": name, "arguments": args})
    return calls


def _read_jsonl(archive: zipfile.ZipFile, member: str, wheel: Path) -> list[dict[str, Any]]:
    try:
        raw = archive.read(member).decode("utf-8")
    except KeyError:
        raise DataError(f"{wheel}: no {member} in the wheel (not a bfcl-eval {BFCL_VERSION}-style wheel?)") from None
    rows = []
    for n, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{wheel}!{member}:{n}: invalid JSON ({exc.msg})") from None
    return rows


def _split_system(turns: list[list[dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    messages = [dict(m) for turn in turns for m in turn]
    system = [m["content"] for m in messages if m.get("role") == "system"]
    rest = [{"role": m["role"], "content": m.get("content") or ""} for m in messages if m.get("role") != "system"]
    return "\n\n".join(system), rest


def load_bfcl(bench: str, wheel: str | Path, limit: int | None = None) -> list[EvalItem]:
    """The questions of one BFCL category (`bench`: a key of BFCL_CATEGORIES) as EvalItems, in file order."""
    if bench not in BFCL_CATEGORIES:
        raise ConfigError(f"unknown benchmark '{bench}': choose from {', '.join(BFCL_CATEGORIES)}")
    category = BFCL_CATEGORIES[bench]
    wheel = Path(wheel)
    irrelevance = "irrelevance" in category
    try:
        with zipfile.ZipFile(wheel) as archive:
            questions = _read_jsonl(archive, f"{_DATA}/BFCL_v4_{category}.json", wheel)
            answers = (
                None if irrelevance else _read_jsonl(archive, f"{_DATA}/possible_answer/BFCL_v4_{category}.json", wheel)
            )
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{wheel}: cannot read the bfcl-eval wheel ({exc})") from None
    if answers is not None and len(answers) != len(questions):
        raise DataError(f"{wheel}: {category}: {len(questions)} questions but {len(answers)} ground-truth rows")
    items = []
    for k, q in enumerate(questions[:limit] if limit is not None else questions):
        functions = q["function"]
        system, messages = _split_system(q["question"])
        # upstream aligns ground truth with questions by position (eval_runner._subset_entries_by_model_ids)
        possible = None if answers is None else answers[k]["ground_truth"]
        items.append(
            EvalItem(
                id=q["id"],
                source=bench,
                category=category,
                kind="irrelevance" if irrelevance else "call",
                system=system,
                tools=[to_openai_tool(f) for f in functions],
                messages=messages,
                gold=[] if possible is None else first_answer_calls(possible, functions),
                possible_answer=possible,
                functions=functions,
            )
        )
    return items

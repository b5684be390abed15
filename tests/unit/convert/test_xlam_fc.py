"""xlam-fc: xLAM/APIGen function-calling-60k records → user query + assistant tool calls."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert.formats.xlam_fc import XlamFunctionCalling, json_type, xlam_schema

SAMPLE = DATA / "xlam_fc" / "xlam_fc_sample.jsonl"


@pytest.mark.parametrize("fmt", ["xlam-fc", "auto"])
def test_sample_converts(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [SAMPLE], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (4, 4, 0)
    assert summary.files[str(SAMPLE)]["format"] == "xlam-fc"
    first = recs[0]
    assert first["unique_trajectory_id"] == "xlam-fc-60k---xlam_fc_sample---1"
    assert first["source"] == "xlam-fc-60k"
    assert first["meta"] == {"original_id": 1, "file": "xlam_fc_sample.jsonl"}
    (tool,) = first["tools"]
    assert tool["name"] == "live_giveaways_by_type"
    # the argument is literally called "type": still read as flat xLAM args, not as a schema
    assert tool["parameters"]["properties"]["type"]["type"] == "string"
    assert tool["parameters"]["properties"]["type"]["default"] == "game"
    assert tool["parameters"]["required"] == []
    assert [t["role"] for t in first["conversation"]] == ["user", "assistant"]
    calls = first["conversation"][1]["tool_calls"]
    assert [(c["id"], c["arguments"]) for c in calls] == [
        ("call_1_0", {"type": "beta"}),
        ("call_1_1", {"type": "game"}),
    ]
    median = recs[1]["tools"][0]["parameters"]
    assert median["properties"]["numbers"]["items"] == {"type": ["integer", "number"]}
    assert median["required"] == ["numbers"]
    news = recs[2]["tools"][0]["parameters"]
    assert news["required"] == []  # defaults and ", optional" make arguments optional
    assert news["properties"]["limit"]["type"] == "integer"
    assert news["properties"]["recent_first"] == {
        "type": "boolean",
        "description": "Sort newest first.",
        "default": True,
    }
    merge = recs[3]["tools"][0]["parameters"]
    assert merge["properties"]["dict2"]["type"] == "object" and merge["required"] == ["dict1", "dict2"]
    assert rejects == []


def test_malformed_records_are_rejected_and_others_kept(tmp_path):
    good = SAMPLE.read_text(encoding="utf-8").splitlines()[0]
    rows = [
        good,
        {"id": 7, "query": "q", "tools": "[]"},
        {"id": 8, "query": "q", "tools": '[{"name": ', "answers": "[]"},
        {"id": 9, "query": "q", "tools": "[]", "answers": "[]"},
        {"id": 10, "query": "q", "tools": "[]", "answers": json.dumps([{"name": "f", "arguments": "[1]"}])},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "xlam-fc")
    assert (summary.read, summary.converted) == (5, 1)
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "missing_key"),
        ("line 3", "invalid_json_field"),
        ("line 4", "empty_answers"),
        ("line 5", "arguments_not_object"),
    ]
    assert "'answers'" in rejects[0]["message"]
    assert recs[0]["meta"]["original_id"] == 1


def test_call_to_undeclared_tool_fails_validation(tmp_path):
    row = {"id": 3, "query": "q", "tools": "[]", "answers": json.dumps([{"name": "f", "arguments": {}}])}
    tools = [{"name": "g", "description": "", "parameters": {}}]
    path = write_jsonl(tmp_path / "in.jsonl", [row, {**row, "id": 4, "tools": json.dumps(tools)}])
    summary, _, rejects = run_convert(tmp_path, [path], "xlam-fc")
    assert summary.converted == 1  # no tools declared: any call name is allowed
    assert [r["reason"] for r in rejects] == ["unknown_tool"]
    assert rejects[0]["record_id"] == "xlam-fc-60k---in---4"


def test_type_names():
    assert json_type("str") == {"type": "string"}
    assert json_type("List[int]") == {"type": "array", "items": {"type": "integer"}}
    assert json_type("List") == {"type": "array"}
    assert json_type("Optional[float]") == {"type": "number"}
    assert json_type("int, optional") == {"type": "integer"}
    assert json_type("Tuple[int, int]") == {"type": "array"}
    assert json_type("Callable[[float], float]") == {}
    assert json_type("Any") == {}


def test_schema_normalisation_is_idempotent():
    flat = {"a": {"type": "str", "description": "x"}, "b": {"type": "Optional[int]", "description": "y"}}
    schema = xlam_schema(flat)
    assert schema == {
        "type": "object",
        "properties": {
            "a": {"type": "string", "description": "x"},
            "b": {"type": "integer", "description": "y"},
        },
        "required": ["a"],
    }
    assert xlam_schema(schema) == schema
    legacy = {"type": "dict", "properties": {"q": {"type": "str"}}}
    assert xlam_schema(legacy, ["q"]) == {
        "type": "object",
        "properties": {"q": {"type": "string"}},
        "required": ["q"],
    }


def test_sniff_is_specific():
    assert XlamFunctionCalling.sniff({"id": 1, "query": "q", "tools": "[]", "answers": "[]"}) > 0.9
    assert XlamFunctionCalling.sniff({"query": "q", "api_list": [], "query_id": 3}) == 0.0  # ToolBench query
    assert XlamFunctionCalling.sniff({"messages": []}) == 0.0

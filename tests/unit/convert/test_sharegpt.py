"""sharegpt: ShareGPT from/value chats with LLaMA-Factory function_call / observation turns."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert, turn
from xlam_hpc.convert.formats.sharegpt import ShareGPT

SAMPLE = DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"


@pytest.mark.parametrize("fmt", ["sharegpt", "auto"])
def test_glaive_toolcall_sample(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [SAMPLE], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (20, 20, 0)
    assert summary.files[str(SAMPLE)]["format"] == "sharegpt"
    first = recs[0]
    assert first["unique_trajectory_id"] == "sharegpt---glaive_toolcall_en_demo.head20---0"
    assert first["tools"][0]["name"] == "search_recipes"
    assert first["tools"][0]["parameters"]["required"] == ["ingredients"]
    roles = [t["role"] for t in first["conversation"]]
    assert roles == ["user", "assistant", "user", "assistant", "tool", "assistant", "user", "assistant"]
    call = first["conversation"][3]["tool_calls"][0]
    assert call == {
        "id": "call_3_0",
        "name": "search_recipes",
        "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]},
    }
    assert first["conversation"][4]["tool_call_id"] == "call_3_0"
    assert first["conversation"][4]["content"].startswith('{"recipes": [{"name": "Chicken and Bell Pepper Stir Fry"')
    assert recs[1]["tools"] == []  # "tools": "[]" and no calls
    assert sum(1 for r in recs for t in r["conversation"] if t["role"] == "tool") > 5
    assert rejects == []


def test_gpt_thought_merges_with_function_call_and_parallel_results_split(tmp_path):
    row = {
        "system": "You are helpful.",
        "tools": [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}],
        "conversations": [
            turn("human", "do two things"),
            turn("gpt", "I will call f twice."),
            turn(
                "function_call",
                json.dumps([{"name": "f", "arguments": {"i": 1}}, {"name": "f", "arguments": {"i": 2}}]),
            ),
            turn(
                "observation",
                json.dumps([{"name": "f", "content": "one"}, {"name": "f", "content": {"v": 2}}]),
            ),
            turn("gpt", "Done."),
        ],
    }
    path = write_jsonl(tmp_path / "merge.jsonl", [row])
    _, (rec,), _ = run_convert(tmp_path, [path], "sharegpt")
    assert rec["task_instruction"] == "You are helpful."
    conv = rec["conversation"]
    assert [t["role"] for t in conv] == ["user", "assistant", "tool", "tool", "assistant"]
    assert conv[1]["content"] == "I will call f twice."
    assert [c["id"] for c in conv[1]["tool_calls"]] == ["call_1_0", "call_1_1"]
    assert [(t["tool_call_id"], t["content"]) for t in conv[2:4]] == [
        ("call_1_0", "one"),
        ("call_1_1", '{"v": 2}'),
    ]


def test_malformed_records_are_rejected(tmp_path):
    rows = [
        json.loads(SAMPLE.read_text(encoding="utf-8"))[0],
        {"tools": "[]"},
        {"conversations": [turn("human", "q"), turn("observation", "r")], "tools": "[]"},
        {"conversations": [turn("human", "q"), turn("function_call", "{'name': 'f'}")], "tools": "[]"},
        {"conversations": [turn("human", "q"), turn("function", "r")]},
        {"conversations": [turn("human", "q"), turn("gpt", "a")], "tools": "not json"},
        {"conversations": [turn("human", "q"), turn("system", "late"), turn("gpt", "a")]},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "sharegpt")
    assert (summary.read, summary.converted) == (7, 1)
    assert recs[0]["tools"][0]["name"] == "search_recipes"
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "missing_key"),
        ("line 3", "unmatched_tool_turn"),
        ("line 4", "invalid_json_field"),
        ("line 5", "unknown_role"),
        ("line 6", "invalid_json_field"),
        ("line 7", "late_system_turn"),
    ]
    assert "conversations[1]" in rejects[1]["message"]


def test_sniff_leaves_other_from_value_formats_alone():
    glaive = json.loads(SAMPLE.read_text(encoding="utf-8"))[0]
    assert ShareGPT.sniff(glaive) >= 0.8
    agentinstruct = {"id": "os_1", "conversations": [turn("human", "task"), {**turn("gpt", "OK"), "loss": False}]}
    assert ShareGPT.sniff(agentinstruct) == 0.4
    eto = {
        "id": "webshop_1",
        "conversations": [turn("human", "x"), turn("gpt", "OK")],
        "reward": 1.0,
        "source": "human",
    }
    assert ShareGPT.sniff(eto) == 0.4
    hermes = {
        "conversations": [
            turn("system", "<tools>[]</tools>"),
            turn("human", "q"),
            turn("gpt", "<tool_call>{}</tool_call>"),
        ]
    }
    assert ShareGPT.sniff(hermes) < 0.5
    toolllama = {"id": "Step 1", "conversations": [turn("system", "s"), turn("user", "q"), turn("function", "r")]}
    assert ShareGPT.sniff(toolllama) < 0.5
    ranking = {"conversations": [turn("human", "q")], "chosen": turn("gpt", "a"), "rejected": turn("gpt", "b")}
    assert ShareGPT.sniff(ranking) == 0.0

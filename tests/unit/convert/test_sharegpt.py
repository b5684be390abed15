"""sharegpt: ShareGPT from/value chats with LLaMA-Factory function_call / observation turns."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.convert.formats.sharegpt import ShareGPT
from xlam_hpc.schema import decode_record

SAMPLE = DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"


def _convert(tmp_path, inputs, fmt):
    out = tmp_path / "out.jsonl"
    cfg = ConvertConfig(inputs=[str(p) for p in inputs], output=str(out), format=fmt, progress=False)
    summary = convert_files(cfg, log=lambda *_: None)
    lines = out.read_text(encoding="utf-8").splitlines()
    for line in lines:
        decode_record(line)
    rejects = [json.loads(r) for r in (tmp_path / "out.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, [json.loads(line) for line in lines], rejects


def _t(role, value):
    return {"from": role, "value": value}


@pytest.mark.parametrize("fmt", ["sharegpt", "auto"])
def test_glaive_toolcall_sample(tmp_path, fmt):
    summary, recs, rejects = _convert(tmp_path, [SAMPLE], fmt)
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
            _t("human", "do two things"),
            _t("gpt", "I will call f twice."),
            _t(
                "function_call",
                json.dumps([{"name": "f", "arguments": {"i": 1}}, {"name": "f", "arguments": {"i": 2}}]),
            ),
            _t(
                "observation",
                json.dumps([{"name": "f", "content": "one"}, {"name": "f", "content": {"v": 2}}]),
            ),
            _t("gpt", "Done."),
        ],
    }
    path = write_jsonl(tmp_path / "merge.jsonl", [row])
    _, (rec,), _ = _convert(tmp_path, [path], "sharegpt")
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
        {"conversations": [_t("human", "q"), _t("observation", "r")], "tools": "[]"},
        {"conversations": [_t("human", "q"), _t("function_call", "{'name': 'f'}")], "tools": "[]"},
        {"conversations": [_t("human", "q"), _t("function", "r")]},
        {"conversations": [_t("human", "q"), _t("gpt", "a")], "tools": "not json"},
        {"conversations": [_t("human", "q"), _t("system", "late"), _t("gpt", "a")]},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    summary, recs, rejects = _convert(tmp_path, [path], "sharegpt")
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
    agentinstruct = {"id": "os_1", "conversations": [_t("human", "task"), {**_t("gpt", "OK"), "loss": False}]}
    assert ShareGPT.sniff(agentinstruct) == 0.4
    eto = {
        "id": "webshop_1",
        "conversations": [_t("human", "x"), _t("gpt", "OK")],
        "reward": 1.0,
        "source": "human",
    }
    assert ShareGPT.sniff(eto) == 0.4
    hermes = {
        "conversations": [
            _t("system", "<tools>[]</tools>"),
            _t("human", "q"),
            _t("gpt", "<tool_call>{}</tool_call>"),
        ]
    }
    assert ShareGPT.sniff(hermes) < 0.5
    toolllama = {"id": "Step 1", "conversations": [_t("system", "s"), _t("user", "q"), _t("function", "r")]}
    assert ShareGPT.sniff(toolllama) < 0.5
    ranking = {"conversations": [_t("human", "q")], "chosen": _t("gpt", "a"), "rejected": _t("gpt", "b")}
    assert ShareGPT.sniff(ranking) == 0.0

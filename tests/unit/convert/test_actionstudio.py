"""actionstudio: xLAM ActionStudio unified records (and our own unified records) → normalised records."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, make_record, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert.formats.actionstudio import ActionStudio

SAMPLE = DATA / "xlam_actionstudio_unified_v2" / "criticlam_example_trajectories.json"


@pytest.mark.parametrize("fmt", ["actionstudio", "auto"])
def test_criticlam_examples(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [SAMPLE], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (2, 2, 0)
    assert summary.files[str(SAMPLE)]["format"] == "actionstudio"
    first, second = recs
    assert first["unique_trajectory_id"] == "xlam-actionstudio---criticlam_example_trajectories---0"
    assert first["score"] == 2.0  # critic_score '{"score": "2", ...}' (JSON text with a Python \' escape)
    assert first["meta"]["critic_explanation"].startswith("The conversation demonstrates several issues.")
    assert first["meta"]["_source_variables"] == ["example_trajectory", "example_tools", "example_score"]
    assert first["tools"][0]["name"] == "listJobCategories"
    call = first["conversation"][1]["tool_calls"][0]
    assert call == {"id": "173924900", "name": "searchJobPostings", "arguments": {"company": "DreamTech"}}
    assert first["conversation"][1]["content"].startswith(" I need to find the job posting")
    assert first["conversation"][2]["content"].startswith("Status Code: 405.")
    assert second["score"] is None  # "TODO"
    tool_turn = second["conversation"][2]
    assert tool_turn["content"].startswith('[{"name": "Market Trends API", "results": {"trends"')
    # the source's tool turn names a call id that does not exist; the single open call is the one answered
    assert tool_turn["tool_call_id"] == "418706783"
    assert second["meta"]["repaired_tool_call_ids"] == [{"turn": 2, "from": "649343337", "to": "418706783"}]
    last = second["conversation"][-1]
    assert [c["name"] for c in last["tool_calls"]] == [
        "SEC Filings",
        "United States Away from Home Mobility API",
    ]
    assert rejects == []


def test_own_output_converts_to_identical_records(tmp_path):
    run_convert(tmp_path, [SAMPLE], "actionstudio", "first")
    first = tmp_path / "first.jsonl"
    summary, _, _ = run_convert(tmp_path, [first], "auto", "second")
    assert summary.files[str(first)]["format"] == "actionstudio"
    assert (tmp_path / "second.jsonl").read_bytes() == first.read_bytes()


def test_own_trajectory_and_preference_records_pass_through(tmp_path):
    traj = make_record(3, "mysrc")
    pref = {
        "unique_trajectory_id": "pair-1",
        "source": "prefs",
        "conversation": [{"role": "user", "content": "2+2?"}],
        "chosen": {"role": "assistant", "content": "4"},
        "rejected": {"role": "assistant", "content": "5"},
        "score": 1.5,
        "meta": {"k": "v"},
    }
    path = write_jsonl(tmp_path / "own.jsonl", [traj, pref])
    summary, recs, _ = run_convert(tmp_path, [path], "actionstudio")
    assert summary.converted == 2
    (rec,) = recs  # SFT trajectories and DPO pairs are not mixed in one file: the pair went to out.preference.jsonl
    assert rec["unique_trajectory_id"] == "mysrc---own---mysrc-3" and rec["source"] == "mysrc"
    assert rec["meta"]["original_id"] == "mysrc-3"
    assert rec["conversation"] == traj["conversation"]
    assert rec["score"] == 3.0
    (pair,) = [json.loads(line) for line in (tmp_path / "out.preference.jsonl").read_text().splitlines()]
    assert pair["chosen"] == {"role": "assistant", "content": "4"}
    assert (pair["score"], pair["meta"]) == (1.5, {"k": "v", "original_id": "pair-1"})
    assert summary.outputs == {
        "trajectory": str(tmp_path / "out.jsonl"),
        "preference": str(tmp_path / "out.preference.jsonl"),
    }


def test_unknown_keys_go_to_meta(tmp_path):
    row = {
        "unique_trajectory_id": "as---train---7",
        "task_instruction": "Be brief.",
        "few_shot_examples": None,
        "dataset": "toolalpaca",
        "split": "train",
        "tools": [],
        "conversation": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "f"}}],
            },
            {"role": "tool", "content": {"ok": True}, "tool_call_id": "call_1_0"},
            {"role": "assistant", "content": "done"},
        ],
    }
    path = write_jsonl(tmp_path / "as.jsonl", [row])
    _, (rec,), _ = run_convert(tmp_path, [path], "actionstudio")
    assert rec["source"] == "xlam-actionstudio"
    assert (rec["task_instruction"], rec["split"]) == ("Be brief.", "train")
    assert rec["meta"] == {"few_shot_examples": None, "dataset": "toolalpaca"}
    assert rec["conversation"][1]["tool_calls"] == [{"id": "call_1_0", "name": "f", "arguments": {}}]
    assert rec["conversation"][2]["content"] == '{"ok": true}'


def test_leading_system_turn_becomes_the_instruction(tmp_path):
    conv = [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    late = [conv[1], conv[0], conv[2]]
    path = write_jsonl(tmp_path / "sys.jsonl", [{"conversation": conv}, {"conversation": late}])
    _, (rec,), rejects = run_convert(tmp_path, [path], "actionstudio")
    assert rec["task_instruction"] == "Sys."
    assert [t["role"] for t in rec["conversation"]] == ["user", "assistant"]
    assert [r["reason"] for r in rejects] == ["unknown_role"]


def test_malformed_records_are_rejected(tmp_path):
    good = json.loads(SAMPLE.read_text(encoding="utf-8"))[0]
    call = {"type": "function", "id": "a", "function": {"name": "f", "arguments": "{oops"}}
    two = [
        {"type": "function", "id": "a", "function": {"name": "f", "arguments": {}}},
        {"type": "function", "id": "b", "function": {"name": "f", "arguments": {}}},
    ]
    rows = [
        good,
        {"tools": []},
        {"conversation": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]},
        {
            "conversation": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": two},
                {"role": "tool", "content": "r", "tool_call_id": "zzz"},
                {"role": "tool", "content": "r", "tool_call_id": "b"},
                {"role": "assistant", "content": "ok"},
            ]
        },
        {**good, "critic_score": '{"score": "high"}'},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "actionstudio")
    assert (summary.read, summary.converted) == (5, 1)
    assert recs[0]["unique_trajectory_id"] == "xlam-actionstudio---bad---1"
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "missing_key"),
        ("line 3", "invalid_arguments_json"),
        ("line 4", "unmatched_tool_turn"),  # two open calls: the stale id is not guessed
        ("line 5", "bad_score"),
    ]
    assert "conversation[1]" in rejects[1]["message"]


def test_sniff():
    assert ActionStudio.sniff(json.loads(SAMPLE.read_text(encoding="utf-8"))[0]) > 0.9
    assert ActionStudio.sniff(make_record(1)) > 0.9
    agentinstruct = {"id": "os_1", "conversations": [{"role": "user", "content": "x"}]}
    assert ActionStudio.sniff(agentinstruct) == 0.0
    assert ActionStudio.sniff({"messages": [{"role": "user", "content": "x"}]}) == 0.0

"""openai: OpenAI chat messages with tool_calls / legacy function_call."""

from __future__ import annotations

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert.formats.openai_messages import OpenAIMessages

SAMPLE = DATA / "openai_messages" / "openai_sample.jsonl"


@pytest.mark.parametrize("fmt", ["openai", "auto"])
def test_sample_converts(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [SAMPLE], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (3, 3, 0)
    assert summary.files[str(SAMPLE)]["format"] == "openai"
    parallel, plain, legacy = recs
    assert parallel["unique_trajectory_id"] == "openai-messages---openai_sample---oa-parallel-1"  # namespaced
    assert parallel["meta"]["original_id"] == "oa-parallel-1"
    assert parallel["task_instruction"] == "You are a travel assistant. Use the tools when needed."
    assert [t["name"] for t in parallel["tools"]] == ["get_weather", "get_time"]
    calls = parallel["conversation"][1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_abc1", "call_abc2", "call_abc3"]
    assert calls[1]["arguments"] == {"city": "Tokyo", "unit": "celsius"}
    answered = [(t["tool_call_id"], t["name"]) for t in parallel["conversation"][2:5]]
    assert answered == [("call_abc2", "get_weather"), ("call_abc1", "get_weather"), ("call_abc3", "get_time")]
    assert parallel["conversation"][3]["content"].startswith('{"temp": 14')

    assert plain["unique_trajectory_id"] == "openai-messages---openai_sample---2"
    assert plain["conversation"][0]["content"] == "Hi! Tell me a fun fact."
    first_call = plain["conversation"][1]
    assert first_call["train"] is False  # weight: 0
    assert first_call["tool_calls"] == [{"id": "call_1_0", "name": "random_fact", "arguments": {}}]
    assert plain["conversation"][2]["tool_call_id"] == "call_1_0"  # tool message without id

    assert legacy["tools"][0]["name"] == "lookup_order"
    call = legacy["conversation"][1]["tool_calls"][0]
    assert call == {"id": "call_1_0", "name": "lookup_order", "arguments": {"order_id": "8812"}}
    assert legacy["conversation"][2] == {
        "role": "tool",
        "content": '{"status": "shipped", "eta": "2024-05-02"}',
        "tool_call_id": "call_1_0",
        "name": "lookup_order",
    }
    assert rejects == []


def test_malformed_records_are_rejected(tmp_path):
    good = SAMPLE.read_text(encoding="utf-8").splitlines()[0]
    bad_args = {"type": "function", "id": "x", "function": {"name": "f", "arguments": '{"a": '}}
    rows = [
        good,
        {"tools": []},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [bad_args]}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "late"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "function", "name": "f", "content": "r"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant"},
            ]
        },
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "openai")
    assert (summary.read, summary.converted) == (7, 1)
    assert recs[0]["unique_trajectory_id"] == "openai-messages---bad---oa-parallel-1"
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "missing_key"),
        ("line 3", "invalid_arguments_json"),
        ("line 4", "late_system_turn"),
        ("line 5", "unmatched_tool_turn"),
        ("line 6", "unsupported_content"),
        ("line 7", "empty_assistant_turn"),
    ]
    assert "messages[1]" in rejects[1]["message"]


def test_sniff_leaves_react_text_chats_and_other_formats_alone():
    # FireAct gpt_format: ReAct text with observations as user turns (the `react` converter's)
    fireact = {
        "messages": [
            {"role": "user", "content": "Which band formed first?"},
            {"role": "assistant", "content": "Thought: I need to search.\nAction: search[Band A]"},
            {"role": "user", "content": "Observation: Band A formed in 1970."},
        ]
    }
    assert OpenAIMessages.sniff(fireact) < 0.5
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert OpenAIMessages.sniff(chat) == 0.4
    assert OpenAIMessages.sniff({**chat, "label": True}) == 0.6  # KTO: claimed, then rejected (kto_unsupported)
    # messages under another key: lower than under `messages`, below the environment converters
    assert OpenAIMessages.sniff({"dialog": chat["messages"]}) == 0.3
    assert OpenAIMessages.sniff({"traj": chat["messages"], "tools": []}) == 0.7
    assert OpenAIMessages.sniff({"chosen": chat["messages"], "rejected": chat["messages"]}) == 0.0
    v1 = {"messages": [{"role": "user", "content": [{"type": "text", "value": "hi"}]}]}
    assert OpenAIMessages.sniff(v1) == 0.0
    assert OpenAIMessages.sniff({"conversations": [{"from": "human", "value": "hi"}]}) == 0.0
    tool_chat = {"messages": [*chat["messages"], {"role": "tool", "tool_call_id": "x", "content": "r"}]}
    assert OpenAIMessages.sniff(tool_chat) >= 0.8
    assert OpenAIMessages.sniff({**chat, "tools": []}) >= 0.8

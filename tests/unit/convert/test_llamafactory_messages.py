"""llamafactory-messages: LLaMA-Factory v1 typed-part messages (reasoning / tool_call / text, loss_weight)."""

from __future__ import annotations

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert.formats.llamafactory_messages import LlamaFactoryMessages

SAMPLE = DATA / "llamafactory_v1_messages_reason_tool_use" / "reason_tool_use_demo_50.head13.jsonl"


def _msg(role, *parts, **extra):
    return {"role": role, "content": [{"type": t, "value": v} for t, v in parts], **extra}


@pytest.mark.parametrize("fmt", ["llamafactory-messages", "auto"])
def test_sample_converts(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [SAMPLE], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (13, 13, 0)
    assert summary.files[str(SAMPLE)]["format"] == "llamafactory-messages"
    first = recs[0]
    assert first["unique_trajectory_id"] == "llamafactory-messages---reason_tool_use_demo_50.head13---1"
    assert first["task_instruction"].startswith("You are a methodical and expert assistant.")
    schema = first["tools"][0]["parameters"]
    assert schema["type"] == "object"  # was "dict"
    assert schema["properties"]["identifier"]["type"] == "string"  # was "str"
    assert schema["required"] == ["identifier"]  # was beside `parameters`
    answer = first["conversation"][1]
    assert answer["reasoning"].startswith("Okay, the user is asking for schools near latitude 40")  # its own field
    assert answer["content"].startswith("I'm sorry, but the available tools")  # the text part only

    circles = recs[2]  # two parallel calls answered by ONE tool message holding a list of results
    calls = circles["conversation"][1]["tool_calls"]
    assert [(c["id"], c["arguments"]) for c in calls] == [
        ("call_1_0", {"radius": 1.5}),
        ("call_1_1", {"radius": 3}),
    ]
    tools = circles["conversation"][2:4]
    assert [(t["tool_call_id"], t["content"][:16]) for t in tools] == [
        ("call_1_0", "{'area': 7.0686,"),
        ("call_1_1", "{'area': 28.2743"),
    ]
    assert [len(c.get("tool_calls", [])) for c in circles["conversation"] if c["role"] == "assistant"] == [
        2,
        0,
        3,
        0,
    ]

    movies = recs[1]  # a single call whose result list is not {name, content}: kept verbatim
    assert movies["conversation"][2]["content"].startswith('[{"title": "Inception"')
    quotes = recs[11]["conversation"][2]  # [{tool_call_id, name, content}] for one call: unwrapped
    assert quotes["name"] == "extract" and quotes["content"].startswith('{"data": {"name": "ABC Corporation"')
    open_end = recs[7]["conversation"][-1]  # dialog ends on two calls without results
    assert open_end["role"] == "assistant" and len(open_end["tool_calls"]) == 2
    assert rejects == []


def test_loss_weight_zero_is_not_trained(tmp_path):
    row = {
        "messages": [
            _msg("user", ("text", "hi"), loss_weight=0.0),
            _msg("assistant", ("text", "hello"), loss_weight=0.0),
            _msg("user", ("text", "2+2?")),
            _msg("assistant", ("reasoning", "Simple sum."), ("text", "4"), loss_weight=1.0),
        ],
        "tools": "",
    }
    path = write_jsonl(tmp_path / "lw.jsonl", [row])
    _, (rec,), _ = run_convert(tmp_path, [path], "llamafactory-messages")
    assert rec["conversation"][1]["train"] is False
    assert "train" not in rec["conversation"][3]
    assert (rec["conversation"][3]["reasoning"], rec["conversation"][3]["content"]) == ("Simple sum.", "4")
    assert rec["tools"] == []


def test_malformed_records_are_rejected(tmp_path):
    good = SAMPLE.read_text(encoding="utf-8").splitlines()[0]
    call = ("tool_call", '{"name": "f", "arguments": {}}')
    rows = [
        good,
        {"tools": "[]"},
        {"messages": [_msg("user", ("text", "q")), _msg("assistant", ("tool_call", '{"name": "f", "arg'))]},
        {"messages": [_msg("user", ("text", "q")), _msg("assistant", ("image", "x.png"))]},
        {
            "messages": [
                _msg("user", ("text", "q")),
                _msg("assistant", call),
                _msg("tool", ("text", "r1")),
                _msg("tool", ("text", "r2")),
            ]
        },
        {"messages": [_msg("user", ("text", "q")), _msg("assistant", call), _msg("user", ("text", "and?"))]},
        {"messages": [_msg("user", ("text", "q")), _msg("assistant", ("text", "a"))], "tools": "[{"},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "llamafactory-messages")
    assert (summary.read, summary.converted) == (7, 1)
    assert recs[0]["conversation"][0]["content"] == "What are the schools near latitude 40 and longitude -75?"
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "missing_key"),
        ("line 3", "invalid_json_field"),
        ("line 4", "unsupported_part"),
        ("line 5", "unmatched_tool_turn"),
        ("line 6", "unanswered_tool_call"),
        ("line 7", "invalid_json_field"),
    ]
    assert "messages[1]" in rejects[1]["message"]


def test_sniff():
    assert LlamaFactoryMessages.sniff({"messages": [_msg("user", ("text", "hi"))]}) == 0.9
    assert LlamaFactoryMessages.sniff({"messages": [{"role": "user", "content": "hi"}]}) == 0.0
    assert LlamaFactoryMessages.sniff({"chosen_messages": [_msg("user", ("text", "hi"))]}) == 0.0

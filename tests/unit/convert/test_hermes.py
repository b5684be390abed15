"""hermes: Hermes function-calling v1 (<tools>/<tool_call>/<tool_response>) and flat Glaive v2 chats."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert, turn
from xlam_hpc.convert.formats.hermes import Hermes

HERMES = DATA / "hermes_function_calling_v1" / "hermes_fc_v1_card_examples.json"
GLAIVE = DATA / "glaive_v2" / "glaive_v2_sample.jsonl"


@pytest.mark.parametrize("fmt", ["hermes", "auto"])
def test_hermes_card_examples(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [HERMES], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (4, 3, 1)
    assert summary.files[str(HERMES)]["format"] == "hermes"
    flights, movie, agent = recs
    # the record's own id, namespaced by source and file (the same id in another file is another record)
    assert flights["unique_trajectory_id"] == (
        "hermes-fc-v1---hermes_fc_v1_card_examples---753d8365-0e54-43b1-9514-3f9b819fd31c"
    )
    assert flights["source"] == "hermes-fc-v1"
    assert flights["meta"] == {
        "category": "E-commerce Platforms",
        "subcategory": "Kayak",
        "task": "Flight Search",
        "original_id": "753d8365-0e54-43b1-9514-3f9b819fd31c",
    }
    assert [t["name"] for t in flights["tools"]] == ["search_flights"]
    assert "<tools>\n[" not in flights["task_instruction"]  # the tool list moved to `tools`
    assert flights["task_instruction"].startswith("You are a function calling AI model.")
    assert "For each function call return a json object" in flights["task_instruction"]
    call = flights["conversation"][1]["tool_calls"][0]
    assert call["name"] == "search_flights" and call["id"] == "call_1_0"
    assert call["arguments"]["flexible_cancellation"] is True  # Python literal True
    tool = flights["conversation"][2]
    assert (tool["tool_call_id"], tool["name"]) == ("call_1_0", "search_flights")
    assert tool["content"].startswith('{"flights": [{"flight_number": "AA118"')
    assert flights["conversation"][3]["content"].startswith("Here are the available flight options")
    # json-mode: no tools, the schema stays in the instruction, the JSON answer is a plain turn
    assert movie["tools"] == [] and "<schema>" in movie["task_instruction"]
    assert movie["conversation"][1]["content"].startswith('{"movieId": "INTSTL_2014"')
    assert agent["meta"]["subcategory"] == "Agent Execution"
    # the card's extraction example puts the function name inside "arguments": not a usable call
    (rej,) = rejects
    assert (rej["position"].rsplit(":", 1)[-1], rej["reason"]) == ("record 1", "unparseable_action")
    assert "conversations[2]" in rej["message"] and "no top-level 'name'" in rej["message"]


@pytest.mark.parametrize("fmt", ["hermes", "auto"])
def test_glaive_v2(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [GLAIVE], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (2, 2, 0)
    bmi, plain = recs
    assert bmi["unique_trajectory_id"] == "glaive-fc-v2---glaive_v2_sample---1"
    assert bmi["source"] == "glaive-fc-v2"
    assert (
        bmi["task_instruction"]
        == "You are a helpful assistant with access to the following functions. Use them if required"
    )
    assert [t["name"] for t in bmi["tools"]] == ["calculate_bmi", "convert_currency"]
    roles = [t["role"] for t in bmi["conversation"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    call = bmi["conversation"][1]["tool_calls"][0]
    assert call == {"id": "call_1_0", "name": "calculate_bmi", "arguments": {"weight": 70, "height": 1.75}}
    assert bmi["conversation"][2]["content"] == '{"bmi": 22.86}'
    assert bmi["conversation"][3]["content"] == "Your Body Mass Index (BMI) is 22.86, which is within the normal range."
    assert plain["tools"] == [] and len(plain["conversation"]) == 4
    assert plain["task_instruction"] == "You are a helpful assistant, with no access to external functions."
    assert rejects == []


def test_parallel_calls_and_responses_matched_by_name(tmp_path):
    system = "Tools:\n<tools>\n[{'type': 'function', 'function': {'name': 'a'}}, {'name': 'b'}]\n</tools>\nGo."
    row = {
        "id": "par-1",
        "conversations": [
            turn("system", system),
            turn("human", "both please"),
            turn(
                "gpt",
                "Calling both.\n<tool_call>\n{'arguments': {}, 'name': 'a'}\n</tool_call>\n"
                '<tool_call>\n{"name": "b", "arguments": {"x": null}}\n</tool_call>',
            ),
            turn(
                "tool",
                '<tool_response>\n{"name": "b", "content": "B"}\n</tool_response>\n'
                "<tool_response>\n{'name': 'a', 'content': {'v': 1}}\n</tool_response>",
            ),
            turn("gpt", "Both done."),
        ],
    }
    path = write_jsonl(tmp_path / "par.jsonl", [row])
    _, (rec,), _ = run_convert(tmp_path, [path], "hermes")
    assert rec["task_instruction"] == "Tools:\nGo."
    assert [t["name"] for t in rec["tools"]] == ["a", "b"]
    conv = rec["conversation"]
    assert conv[1]["content"] == "Calling both."
    assert [(c["id"], c["name"], c["arguments"]) for c in conv[1]["tool_calls"]] == [
        ("call_1_0", "a", {}),
        ("call_1_1", "b", {"x": None}),
    ]
    assert [(t["tool_call_id"], t["content"]) for t in conv[2:4]] == [
        ("call_1_1", "B"),
        ("call_1_0", '{"v": 1}'),
    ]


def test_malformed_records_are_rejected(tmp_path):
    good = json.loads(HERMES.read_text(encoding="utf-8"))[0]
    rows = [
        good,
        {"id": "x1", "conversations": [turn("human", "q"), turn("gpt", "<tool_call>{'name': 'f',</tool_call>")]},
        {"id": "x2", "conversations": [turn("human", "q"), turn("tool", "<tool_response>{}</tool_response>")]},
        {"id": "x3", "conversations": [turn("system", "<tools>\n[{'name': }]\n</tools>"), turn("human", "q")]},
        {"system": "SYSTEM: none", "chat": "USER: hi\n\n\nASSISTANT: <functioncall> {'name' <|endoftext|>"},
        {
            "id": "x5",
            "conversations": [turn("human", "q"), turn("gpt", "<tool_call>{'arguments': {}}</tool_call>")],
        },
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "hermes")
    assert (summary.read, summary.converted) == (6, 1)
    assert recs[0]["unique_trajectory_id"] == f"hermes-fc-v1---bad---{good['id']}"
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "unparseable_action"),
        ("line 3", "unmatched_tool_turn"),
        ("line 4", "invalid_tools_block"),
        ("line 5", "unparseable_action"),
        ("line 6", "unparseable_action"),
    ]


def test_sniff():
    assert Hermes.sniff(json.loads(HERMES.read_text(encoding="utf-8"))[0]) == 0.9
    assert Hermes.sniff({"system": "SYSTEM: x", "chat": "USER: hi\n\n\nASSISTANT: hello"}) == 0.9
    plain = {"conversations": [turn("human", "q"), turn("gpt", "a")], "tools": "[]"}
    assert Hermes.sniff(plain) == 0.0
    assert Hermes.sniff({"messages": []}) == 0.0

"""Schema rules: each bad shape is rejected with its stable reason; good records normalize."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import make_record
from xlam_hpc.schema import RecordInvalid, decode_record, encode_record, to_actionstudio


def _bad(rec: dict) -> str:
    with pytest.raises(RecordInvalid) as info:
        decode_record(json.dumps(rec))
    return info.value.reason


def test_valid_record_round_trips_and_parses_string_arguments():
    rec = make_record(3)
    rec["conversation"][1]["tool_calls"][0]["arguments"] = '{"q": "x"}'
    out = decode_record(json.dumps(rec))
    assert out.conversation[1].tool_calls[0].arguments == {"q": "x"}
    assert out.conversation[2].name == "lookup"
    again = decode_record(encode_record(out))
    assert again == out


def test_call_in_last_turn_needs_no_answer():
    rec = make_record(0)
    rec["conversation"] = rec["conversation"][:2]
    assert decode_record(rec).conversation[-1].tool_calls[0].id == "c0"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.update(conversation=[]), "empty_conversation"),
        (lambda r: r["conversation"].pop(2), "unanswered_tool_call"),
        (
            lambda r: r["conversation"][1]["tool_calls"][0].update(arguments="{not json"),
            "arguments_invalid_json",
        ),
        (lambda r: r["conversation"][1]["tool_calls"][0].update(arguments="[1, 2]"), "arguments_not_object"),
        (lambda r: r["conversation"][1]["tool_calls"][0].update(name="nope"), "unknown_tool"),
        (lambda r: r["conversation"][2].update(tool_call_id="zzz"), "unmatched_tool_turn"),
        (lambda r: r["conversation"].insert(0, {"role": "assistant", "content": "hi"}), "bad_role_order"),
        (lambda r: r["conversation"].insert(1, {"role": "user", "content": "again"}), "bad_role_order"),
        (lambda r: r["conversation"][3].update(content=""), "empty_assistant_turn"),
        (lambda r: r.update(conversation=[{"role": "user", "content": "hi"}]), "no_assistant_turn"),
        (lambda r: r.update(score="high"), "schema"),
        (lambda r: r.pop("source"), "schema"),
        (lambda r: r["conversation"][0].update(role="system"), "schema"),
        (lambda r: r.update(tools=[r["tools"][0], r["tools"][0]]), "duplicate_tool"),
        (lambda r: r["conversation"][2].update(name="other"), "tool_name_mismatch"),
    ],
)
def test_bad_records_are_rejected_with_reason(mutate, reason):
    rec = make_record(1)
    mutate(rec)
    assert _bad(rec) == reason


def test_duplicate_call_ids_rejected():
    rec = make_record(1, turns=2)
    rec["conversation"][5]["tool_calls"][0]["id"] = "c0"
    rec["conversation"][6]["tool_call_id"] = "c0"
    assert _bad(rec) == "duplicate_call_id"


def test_tools_optional_then_any_name_allowed():
    rec = make_record(2)
    rec["tools"] = []
    rec["conversation"][1]["tool_calls"][0]["name"] = "anything"
    rec["conversation"][2]["name"] = "anything"
    assert decode_record(rec).conversation[1].tool_calls[0].name == "anything"


def test_preference_rules():
    base = make_record(5)
    pair = {
        **{k: base[k] for k in ("unique_trajectory_id", "source", "tools")},
        "conversation": base["conversation"][:1],
        "chosen": {"role": "assistant", "content": "good"},
        "rejected": {"role": "assistant", "content": "bad"},
    }
    rec = decode_record(json.dumps(pair))
    assert rec.chosen.content == "good"
    same = copy.deepcopy(pair)
    same["rejected"] = same["chosen"]
    assert _bad(same) == "identical_pair"
    ends_assistant = copy.deepcopy(pair)
    ends_assistant["conversation"] = base["conversation"][:2]
    assert _bad(ends_assistant) == "bad_prompt"
    tool_choice = copy.deepcopy(pair)
    tool_choice["chosen"] = {
        "role": "assistant",
        "tool_calls": [{"id": "x", "name": "lookup", "arguments": {}}],
    }
    assert decode_record(tool_choice).chosen.tool_calls[0].name == "lookup"


def test_actionstudio_export_nests_functions():
    out = to_actionstudio(decode_record(make_record(0)))
    assert out["tools"][0]["type"] == "function" and out["tools"][0]["function"]["name"] == "lookup"
    call = out["conversation"][1]["tool_calls"][0]
    assert call == {
        "type": "function",
        "id": "c0",
        "function": {"name": "lookup", "arguments": {"q": "src-0-0"}},
    }

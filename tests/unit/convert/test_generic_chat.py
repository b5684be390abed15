"""Chat converters that generalize (issue 13 §1): messages under any key, tools from any tools key or
inferred from the calls, text + call-only assistant messages merged, reused call ids renumbered, episode
outcomes as `score`, and KTO records rejected instead of becoming SFT data."""

from __future__ import annotations

import json

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.convert.base import Reject
from xlam_hpc.convert.formats.openai_messages import OpenAIMessages
from xlam_hpc.convert.reader import RawRecord
from xlam_hpc.schema import decode_record
from xlam_hpc.shard.inspect import render_text

KTO = DATA / "llamafactory_kto" / "kto_en_demo.head12.json"


def _call(cid: str, name: str, args: dict) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def _trace(key: str = "traj", **extra) -> dict:
    """An agent trace whose tools live in the environment: no tool specs, the messages under `key`."""
    return {
        key: [
            {"role": "system", "content": "You operate a shop."},
            {"role": "user", "content": "Is item 7 in stock? Then order 2."},
            {"role": "assistant", "content": None, "tool_calls": [_call("c1", "stock", {"item": 7})]},
            {"role": "tool", "tool_call_id": "c1", "content": "3 left"},
            {
                "role": "assistant",
                "tool_calls": [_call("c2", "order", {"item": 7, "qty": 2, "gift": False})],
            },
            {"role": "tool", "tool_call_id": "c2", "content": "ordered"},
            {"role": "assistant", "content": [{"type": "text", "text": "Done: 2 ordered."}]},
        ],
        **extra,
    }


def test_messages_under_any_key_with_inferred_tools(tmp_path):
    rows = [_trace("traj"), _trace("dialog", id="d-1"), _trace("conversations")]
    path = write_jsonl(tmp_path / "traces.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "auto")
    assert summary.files[str(path)]["format"] == "openai"
    assert (summary.read, summary.converted, rejects) == (3, 3, [])
    assert [r["meta"]["messages_key"] for r in recs] == ["traj", "dialog", "conversations"]
    rec = recs[0]
    assert rec["task_instruction"] == "You operate a shop."
    assert [t["role"] for t in rec["conversation"]] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert rec["meta"]["tools_inferred"] is True
    stock, order = rec["tools"]
    assert stock == {
        "name": "stock",
        "description": "",
        "parameters": {"type": "object", "properties": {"item": {"type": "integer"}}, "required": ["item"]},
    }
    assert order["parameters"]["properties"] == {
        "item": {"type": "integer"},
        "qty": {"type": "integer"},
        "gift": {"type": "boolean"},
    }
    # `inspect` shows that the tools were inferred
    assert "tools (inferred from the calls): stock, order" in render_text(decode_record(json.dumps(rec)))


def test_inferred_types_merge_over_calls_and_required_is_what_every_call_passed(tmp_path):
    msgs = [
        {"role": "user", "content": "two searches"},
        {"role": "assistant", "tool_calls": [_call("a", "search", {"q": "x", "limit": 3})]},
        {"role": "tool", "tool_call_id": "a", "content": "r1"},
        {"role": "assistant", "tool_calls": [_call("b", "search", {"q": "y", "limit": 2.5, "tags": ["t"]})]},
        {"role": "tool", "tool_call_id": "b", "content": "r2"},
    ]
    path = write_jsonl(tmp_path / "s.jsonl", [{"messages": msgs}])
    _, [rec], _ = run_convert(tmp_path, [path], "openai")
    params = rec["tools"][0]["parameters"]
    assert params["properties"] == {"q": {"type": "string"}, "limit": {"type": "number"}, "tags": {"type": "array"}}
    assert params["required"] == ["q", "limit"]


def test_tools_from_functions_and_available_tools_json_string(tmp_path):
    spec = {"name": "stock", "description": "Stock of an item", "parameters": {"type": "object", "properties": {}}}
    rows = [
        _trace("messages", functions=[spec, {"name": "order", "parameters": {"type": "object", "properties": {}}}]),
        _trace("messages", available_tools=json.dumps([{"type": "function", "function": spec}, {"name": "order"}])),
        _trace("messages", available_tools="[not json"),
    ]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "openai")
    assert summary.converted == 2
    for rec in recs:
        assert [t["name"] for t in rec["tools"]] == ["stock", "order"]
        assert rec["tools"][0]["description"] == "Stock of an item"
        assert "tools_inferred" not in rec["meta"]
    assert [(r["reason"], "available_tools" in r["message"]) for r in rejects] == [("invalid_json_field", True)]


def test_messages_key_override():
    obj = {
        "history": [{"role": "user", "content": "old"}, {"role": "assistant", "content": "old answer"}],
        "messages": [{"role": "user", "content": "new"}, {"role": "assistant", "content": "new answer"}],
    }
    raw = RawRecord(path="x.jsonl", index=1, obj=obj)
    [default] = OpenAIMessages().convert(raw)
    assert default.conversation[0].content == "new"
    [chosen] = OpenAIMessages(messages_key="history").convert(raw)
    assert chosen.conversation[0].content == "old" and chosen.meta["messages_key"] == "history"
    try:
        OpenAIMessages(messages_key="dialog").convert(raw)
    except Reject as exc:
        assert (exc.reason, "'dialog'" in str(exc)) == ("missing_key", True)
    else:
        raise AssertionError("a missing --messages-key must reject")


def test_text_then_call_only_assistant_messages_merge(tmp_path):
    text_then_calls = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "Let me check the forecast."},
            {"role": "assistant", "content": "", "tool_calls": [_call("w1", "weather", {"city": "Oslo"})]},
            {"role": "tool", "tool_call_id": "w1", "content": "rain"},
            {"role": "assistant", "content": "Rain in Oslo."},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }
    legacy = {
        "messages": [
            {"role": "user", "content": "Order 8812?"},
            {"role": "assistant", "content": "Looking it up."},
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"id": 8812}'}},
            {"role": "function", "name": "lookup", "content": "shipped"},
            {"role": "assistant", "content": "It shipped."},
        ]
    }
    two_texts = {"messages": [{"role": "user", "content": "q"}, *[{"role": "assistant", "content": "a"}] * 2]}
    path = write_jsonl(tmp_path / "m.jsonl", [text_then_calls, legacy, two_texts])
    summary, recs, rejects = run_convert(tmp_path, [path], "openai")
    assert summary.converted == 2
    first = recs[0]["conversation"]
    assert [t["role"] for t in first] == ["user", "assistant", "tool", "assistant"]
    assert first[1]["content"] == "Let me check the forecast."
    assert first[1]["tool_calls"] == [{"id": "w1", "name": "weather", "arguments": {"city": "Oslo"}}]
    second = recs[1]["conversation"]
    assert second[1]["content"] == "Looking it up."
    assert second[1]["tool_calls"] == [{"id": "call_1_0", "name": "lookup", "arguments": {"id": 8812}}]
    assert second[2]["tool_call_id"] == "call_1_0"
    assert recs[1]["meta"]["tools_inferred"] is True
    # two text messages in a row are not a text + calls pair: still rejected
    assert [r["reason"] for r in rejects] == ["bad_role_order"]


def test_v1_text_then_tool_call_message_merges(tmp_path):
    call = {"type": "tool_call", "value": json.dumps({"name": "add", "arguments": {"a": 2}})}
    rec = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "Sum 2 and 3"}]},
            {"role": "assistant", "content": [{"type": "text", "value": "I'll use the calculator."}]},
            {"role": "assistant", "content": [{"type": "reasoning", "value": "2 + 3 needs the adder."}, call]},
            {"role": "tool", "content": [{"type": "text", "value": "5"}]},
            {"role": "assistant", "content": [{"type": "text", "value": "5"}]},
        ]
    }
    path = write_jsonl(tmp_path / "v1.jsonl", [rec])
    summary, [out], _ = run_convert(tmp_path, [path], "auto")
    assert summary.files[str(path)]["format"] == "llamafactory-messages"
    turn = out["conversation"][1]
    assert turn["content"] == "I'll use the calculator."
    assert turn["reasoning"] == "2 + 3 needs the adder."  # the merged call turn's thought is kept
    assert "  assistant (reasoning): 2 + 3 needs the adder.\n  assistant: I'll use" in render_text(
        decode_record(json.dumps(out))
    )
    assert turn["tool_calls"] == [{"id": "call_1_0", "name": "add", "arguments": {"a": 2}}]
    assert out["conversation"][2]["tool_call_id"] == "call_1_0"
    assert out["tools"][0]["name"] == "add" and out["meta"]["tools_inferred"] is True


def _reuse(*turns: list[dict]) -> dict:
    return {"messages": [{"role": "user", "content": "go"}, *[m for t in turns for m in t]]}


def _step(cid: str, name: str, answers: list[str] | None = None) -> list[dict]:
    msgs = [{"role": "assistant", "tool_calls": [_call(cid, name, {})]}]
    answers = [cid] if answers is None else answers
    return msgs + [{"role": "tool", "tool_call_id": a, "content": "ok"} for a in answers]


def test_reused_call_ids_are_renumbered_when_unambiguous(tmp_path):
    final = [{"role": "assistant", "content": "done"}]
    rows = [
        _reuse(_step("call_0", "a"), _step("call_0", "b"), _step("call_0", "c"), final),
        # ambiguous: the same id twice in one assistant message
        _reuse(
            [
                {"role": "assistant", "tool_calls": [_call("x", "a", {}), _call("x", "b", {})]},
                {"role": "tool", "tool_call_id": "x", "content": "1"},
                {"role": "tool", "tool_call_id": "x", "content": "2"},
            ],
            final,
        ),
        # ambiguous: reused while the first call with that id is still unanswered
        _reuse(_step("y", "a", answers=[]), _step("y", "b"), final),
    ]
    path = write_jsonl(tmp_path / "ids.jsonl", rows)
    summary, [rec], rejects = run_convert(tmp_path, [path], "openai")
    conv = rec["conversation"]
    assert [c["id"] for t in conv for c in t.get("tool_calls", [])] == ["call_0", "call_0_1", "call_0_2"]
    assert [t["tool_call_id"] for t in conv if t["role"] == "tool"] == ["call_0", "call_0_1", "call_0_2"]
    assert [t["name"] for t in conv if t["role"] == "tool"] == ["a", "b", "c"]
    assert rec["meta"]["call_ids_renumbered"] == {"call_0_1": "call_0", "call_0_2": "call_0"}
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "duplicate_call_id"),
        ("line 3", "unanswered_tool_call"),
    ]
    assert summary.read == summary.converted + summary.num_rejected == 3


def test_episode_outcome_becomes_score_and_min_score_drops_failures(tmp_path):
    chat = [{"role": "user", "content": "play"}, {"role": "assistant", "content": "move"}]
    rows = [
        {"messages": chat, "id": "won", "success": True},
        {"messages": chat, "id": "lost", "success": False},
        {"messages": chat, "id": "half", "reward": 0.5, "success": True},
        {"messages": chat, "id": "rated", "score": 4, "win": False},
        {"messages": chat, "id": "draw", "win": 0},
        {"messages": chat, "id": "plain"},
        {"messages": chat, "id": "odd", "reward": "high"},
        {"messages": chat, "id": "big", "reward": 7},
    ]
    path = write_jsonl(tmp_path / "ep.jsonl", rows)
    _, recs, rejects = run_convert(tmp_path, [path], "openai")
    by_id = {r["meta"].get("original_id", r["unique_trajectory_id"]).rsplit("---", 1)[-1]: r for r in recs}
    scores = {k: r.get("score") for k, r in by_id.items()}
    assert scores == {"won": 5.0, "lost": 0.0, "half": 2.5, "rated": 4.0, "draw": 0.0, "plain": None}
    assert by_id["lost"]["meta"]["success"] is False
    assert by_id["lost"]["meta"]["score_scale"] == "5 * success (true = 1, false = 0)"
    assert (by_id["half"]["meta"]["reward"], by_id["half"]["meta"]["success"]) == (0.5, True)
    assert by_id["rated"]["meta"]["win"] is False and by_id["rated"]["meta"]["score_scale"] == "score"
    assert [(r["reason"], r["message"].split(" should")[0]) for r in rejects] == [
        ("bad_outcome", "'reward'"),
        ("bad_outcome", "'reward'"),
    ]

    out = tmp_path / "kept.jsonl"
    cfg = ConvertConfig(inputs=[str(path)], output=str(out), format="openai", min_score=1.0, progress=False)
    kept = convert_files(cfg, log=lambda *_: None)
    assert (kept.converted, kept.filtered_min_score) == (4, 2)  # lost and draw dropped; plain (no score) kept


def test_sharegpt_outcome_and_inferred_tools(tmp_path):
    rec = {
        "conversations": [
            {"from": "human", "value": "Find flights"},
            {"from": "function_call", "value": '{"name": "flights", "arguments": {"to": "OSL"}}'},
            {"from": "observation", "value": "[]"},
            {"from": "gpt", "value": "None found."},
        ],
        "reward": 1,
    }
    path = write_jsonl(tmp_path / "sg.jsonl", [rec])
    _, [out], _ = run_convert(tmp_path, [path], "auto")
    assert out["score"] == 5.0 and out["meta"]["reward"] == 1 and out["meta"]["tools_inferred"] is True
    assert out["tools"][0]["parameters"]["properties"] == {"to": {"type": "string"}}


def test_kto_records_are_rejected_not_converted_to_sft(tmp_path):
    # the real LLaMA-Factory KTO demo (messages + label true/false): auto and an explicit --format
    for fmt in ("auto", "openai"):
        summary, recs, rejects = run_convert(tmp_path, [KTO], fmt, name=f"kto-{fmt}")
        assert (summary.read, summary.converted, summary.num_rejected) == (12, 0, 12)
        assert recs == [] and {r["reason"] for r in rejects} == {"kto_unsupported"}
        assert "KTO record (label false)" in rejects[4]["message"]
        assert "not SFT data" in rejects[4]["message"]
    # TRL unpaired preference and LLaMA-Factory sharegpt with a kto tag
    trl = [
        {"prompt": "Capital of France?", "completion": "Paris", "label": True},
        {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "5"}]}
        | {"label": False},
    ]
    trl_path = write_jsonl(tmp_path / "trl_kto.jsonl", trl)
    summary, _, rejects = run_convert(tmp_path, [trl_path], "auto", name="trl")
    assert summary.files[str(trl_path)]["format"] == "dpo-trl"
    assert (summary.converted, [r["reason"] for r in rejects]) == (0, ["kto_unsupported"] * 2)
    sg = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "label": False}
    sg_path = write_jsonl(tmp_path / "sg_kto.jsonl", [sg])
    summary, _, rejects = run_convert(tmp_path, [sg_path], "auto", name="sg")
    assert summary.files[str(sg_path)]["format"] == "sharegpt"
    assert [r["reason"] for r in rejects] == ["kto_unsupported"]

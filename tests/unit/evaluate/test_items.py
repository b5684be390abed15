"""items_from_unified on real unified data (shipped samples converted by xlam_hpc.convert), and item_turns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DATA, make_record, write_jsonl
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.errors import DataError
from xlam_hpc.evaluate.items import EvalItem, item_turns, items_from_unified
from xlam_hpc.shard import ShardConfig, write_shards

XLAM_FC = DATA / "xlam_fc" / "xlam_fc_sample.jsonl"
GLAIVE = DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"


def _convert(src: Path, out: Path) -> Path:
    convert_files(ConvertConfig(inputs=[str(src)], output=str(out), progress=False), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def unified(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unified")
    return {"xlam": _convert(XLAM_FC, root / "xlam.jsonl"), "glaive": _convert(GLAIVE, root / "glaive.jsonl")}


def test_xlam_fc_gives_one_call_item_per_query_with_its_answers(unified):
    raw = [json.loads(line) for line in XLAM_FC.read_text().splitlines()]
    items = items_from_unified([str(unified["xlam"])])
    assert len(items) == len(raw)
    for item, row in zip(items, raw, strict=True):
        assert item.kind == "call"
        assert item.gold == json.loads(row["answers"])
        assert item.category == ("simple" if len(item.gold) == 1 else "parallel")
        assert item.messages == [{"role": "user", "content": row["query"]}]
        assert [t["name"] for t in item.tools] == [t["name"] for t in json.loads(row["tools"])]
        assert item.possible_answer is None
    assert len({i.id for i in items}) == len(items)


def test_multi_turn_items_have_the_conversation_before_the_turn(unified):
    records = [json.loads(line) for line in unified["glaive"].read_text().splitlines()]
    items = items_from_unified([str(unified["glaive"])])
    by_id = {i.id: i for i in items}
    expected = 0
    for rec in records:
        conv = rec["conversation"]
        for k, turn in enumerate(conv):
            if turn["role"] != "assistant" or not (rec["tools"] or turn.get("tool_calls")):
                continue  # chat without tools is not a tool-calling question
            expected += 1
            item = by_id[f"{rec['unique_trajectory_id']}#{k}"]
            assert [m["role"] for m in item.messages] == [t["role"] for t in conv[:k]]
            assert [m.get("content", "") for m in item.messages] == [t.get("content", "") for t in conv[:k]]
            calls = [{"name": c["name"], "arguments": c["arguments"]} for c in turn.get("tool_calls", [])]
            assert item.gold == calls
            assert item.kind == ("call" if calls else "irrelevance")
    assert expected == len(items)
    kinds = {i.kind for i in items}
    assert kinds == {"call", "irrelevance"}  # the glaive sample has both


def test_limit_is_the_first_items_of_each_file(unified):
    paths = [str(unified["glaive"]), str(unified["xlam"])]
    whole = items_from_unified(paths)
    glaive = [i for i in whole if i.source != "xlam-fc-60k"]
    xlam = [i for i in whole if i.source == "xlam-fc-60k"]
    limited = items_from_unified(paths, limit=3)
    assert [i.id for i in limited] == [i.id for i in glaive[:3] + xlam[:3]]
    assert items_from_unified(paths, limit=3) == limited


def test_untrained_turns_and_tool_less_chat_give_no_items(tmp_path):
    rec = make_record(0, "s")
    rec["conversation"][1]["train"] = False  # e.g. an in-context demo
    chat = make_record(1, "s")
    chat["tools"] = []
    chat["conversation"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    items = items_from_unified([str(write_jsonl(tmp_path / "d.jsonl", [rec, chat]))])
    assert [(i.id, i.kind) for i in items] == [("s-0#3", "irrelevance")]


def test_shard_directories_are_read_like_jsonl(unified, tmp_path):
    write_shards(
        ShardConfig(
            inputs=[str(unified["xlam"])], output_dir=str(tmp_path / "shards"), samples_per_shard=2, progress=False
        )
    )
    assert items_from_unified([str(tmp_path / "shards")]) == items_from_unified([str(unified["xlam"])])


def test_errors_name_the_path(unified, tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl"):
        items_from_unified([str(tmp_path / "nope.jsonl")])
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match=r"empty\.jsonl: no evaluation items"):
        items_from_unified([str(empty)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [make_record(0), {"source": "x"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        items_from_unified([str(bad)])
    with pytest.raises(DataError, match="duplicate"):
        items_from_unified([str(unified["xlam"]), str(unified["xlam"])])


def test_item_turns_reads_openai_layout_and_system_messages():
    item = EvalItem(
        id="q1",
        source="bench",
        category="simple",
        kind="call",
        system="Be brief.",
        tools=[],
        messages=[
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "a", "type": "function", "function": {"name": "w", "arguments": '{"c": 1}'}}],
            },
            {"role": "tool", "tool_call_id": "a", "name": "w", "content": "sunny"},
        ],
        gold=[],
    )
    system, turns = item_turns(item)
    assert system == "Be brief.\n\nUse tools."
    assert [t.role for t in turns] == ["user", "assistant", "tool"]
    assert turns[1].tool_calls[0].name == "w" and turns[1].tool_calls[0].arguments == {"c": 1}
    assert turns[2].tool_call_id == "a"


def test_eval_prompt_renders_prefix_reasoning_as_training_does(tmp_path):
    """Qwen3 renders a turn's reasoning in its <think> block: the eval prompt of a prefix holding such a turn
    is the training rendering of that prefix, followed by the generation prompt."""
    from transformers import AutoTokenizer

    from tests.families import model_folder
    from xlam_hpc.collate.template import make_renderer
    from xlam_hpc.evaluate.generate import render_prompt
    from xlam_hpc.schema import ToolCall, Turn

    tok = AutoTokenizer.from_pretrained(model_folder("qwen3", tmp_path))
    call = ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3})
    prefix = [
        Turn(role="user", content="Sum 2 and 3"),
        Turn(role="assistant", content="", reasoning="The adder does it.", tool_calls=[call]),
        Turn(role="tool", content="5", tool_call_id="c1", name="add"),
    ]
    tools = [{"name": "add", "description": "a + b", "parameters": {"type": "object", "properties": {}}}]
    messages = [
        {"role": t.role, "content": t.content}
        | (
            {"reasoning": t.reasoning, "tool_calls": [{"id": "c1", "name": "add", "arguments": call.arguments}]}
            if t.tool_calls
            else {}
        )
        | ({"tool_call_id": "c1", "name": "add"} if t.role == "tool" else {})
        for t in prefix
    ]
    item = EvalItem(
        id="i", source="s", category="simple", kind="call", system="", tools=tools, messages=messages, gold=[]
    )
    options = {"template_kwargs": {}, "tool_arguments": "object", "tool_call_ids": "keep"}
    prompt = render_prompt(item, tok, options)
    assert "<think>\nThe adder does it.\n</think>" in prompt
    # the same text training renders for the prefix plus a reply (template renderer, reasoning as a field)
    from xlam_hpc.schema import FunctionSpec

    renderer = make_renderer("tokenizer", tok)
    reply = Turn(role="assistant", content="5")
    rendered = renderer.render("", [FunctionSpec(**tools[0])], [*prefix, reply])
    assert rendered.text.startswith(prompt)

"""toolbench: DFSDT/CoT answer files and ToolLLaMA conversations → tool-call trajectories."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert import CONVERTERS

TB = DATA / "toolbench"
G1 = TB / "answer" / "G1_answer" / "11_ChatGPT_DFS_woFilter_w2.json"
G2 = TB / "answer" / "G2_answer" / "127_ChatGPT_DFS_woFilter_w2.json"
G3 = TB / "answer" / "G3_answer" / "21_ChatGPT_DFS_woFilter_w2.json"
COT = TB / "raw_answer_v1" / "82217_ChatGPT_CoT@1.json"
LLAMA = TB / "toolllama_processed" / "G1_demo_DFS_woFilter_w2.json"
QUERIES = TB / "instruction" / "G3_query.json"


@pytest.mark.parametrize("fmt", ["toolbench", "auto"])
def test_answer_files(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [G1, G2, G3, COT], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (4, 3, 1)
    assert {v["format"] for v in summary.files.values()} == {"toolbench"}
    g1, g2, cot = recs
    assert g1["unique_trajectory_id"] == "toolbench---11_ChatGPT_DFS_woFilter_w2---G1_answer"
    assert g1["source"] == "toolbench"
    assert g1["task_instruction"].startswith("You are AutoGPT, you can use many tools(functions)")
    assert [t["name"] for t in g1["tools"]] == [
        "transitaire_for_transitaires",
        "transitaires_for_transitaires",
    ]
    assert "optional" not in g1["tools"][0]["parameters"]
    assert g1["tools"][0]["parameters"]["required"] == ["is_id"]
    conv = g1["conversation"]
    assert [t["role"] for t in conv] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert conv[0]["content"].startswith("Help me find information about the customs agency 'Gondrand'")
    assert conv[1] == {
        "role": "assistant",
        "tool_calls": [{"id": "call_1_0", "name": "transitaires_for_transitaires", "arguments": {}}],
    }
    assert conv[3]["tool_calls"][0]["arguments"] == {"is_id": "Gondrand"}
    assert conv[4] == {
        "role": "tool",
        "content": '{"error": "", "response": ""}',
        "tool_call_id": "call_3_0",
        "name": "transitaire_for_transitaires",
    }
    assert conv[5]["reasoning"].startswith("I'm sorry, but I couldn't find any information")  # thought + call
    assert "content" not in conv[5]
    assert conv[7]["content"].startswith("Here is a comprehensive list of all transitaires:")  # Finish → answer
    assert "tool_calls" not in conv[7]
    assert g1["meta"] == {
        "file": "11_ChatGPT_DFS_woFilter_w2.json",
        "group": "G1_answer",
        "win": True,
        "valid_data": True,
        "finish_type": "give_answer",
        "layout": "dfs",
        "finished": True,
        "return_type": "give_answer",
    }
    # give-up chain: the DFSDT "previous trials" user message stays; the last thought ends the chain
    assert [t["role"] for t in g2["conversation"]][3:5] == ["user", "assistant"]
    assert g2["conversation"][-1]["content"].startswith("It appears that there was an error again")
    assert (g2["meta"]["win"], g2["meta"]["return_type"]) == (False, "give_up_and_restart")
    assert cot["meta"]["layout"] == "cot" and cot["conversation"][-1]["content"].startswith("Here are some meaningful")
    # G3 calls 'dota_2_steam_web', which is not among its functions: the schema check rejects it
    (reject,) = rejects
    assert reject["reason"] == "unknown_tool" and reject["file"] == str(G3)
    assert "dota_2_steam_web" in reject["message"]


@pytest.mark.parametrize("fmt", ["toolbench", "auto"])
def test_toolllama_processed(tmp_path, fmt):
    summary, recs, _rejects = run_convert(tmp_path, [LLAMA], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (4, 4, 0)
    step2, *_, step9 = recs
    assert step2["unique_trajectory_id"] == "toolbench---G1_demo_DFS_woFilter_w2---0"
    assert step2["meta"]["step"] == 2 and step9["meta"]["step"] == 9
    assert step2["meta"]["original_id"].startswith("Step 2: I'm planning a surprise party")
    # the API list of the system prompt became tools (Finish excluded) and left the instruction
    assert [t["name"] for t in step9["tools"]] == [
        "love_quote_for_olato_quotes",
        "success_quote_for_olato_quotes",
        "motivation_quote_for_olato_quotes",
    ]
    assert "Specifically, you have access" not in step9["task_instruction"]
    assert step9["task_instruction"].startswith("You are AutoGPT")
    assert step2["conversation"][-1]["tool_calls"] == [
        {"id": "call_1_0", "name": "love_quote_for_olato_quotes", "arguments": {}}
    ]
    conv = step9["conversation"]
    assert conv[2]["content"].startswith('{"error": "", "response": "{\'quote\': \'The best thing')
    assert conv[-1]["content"].startswith("Here are some meaningful quotes that you can include")
    # the thought written with the Finish call is the final turn's reasoning (it was only in meta before)
    assert conv[-1]["reasoning"].startswith("For your surprise party, here are")
    assert "final_thought" not in step9["meta"]
    assert conv[1] == {  # "Thought: " (empty here) + "Action:" → a call without reasoning or content
        "role": "assistant",
        "tool_calls": [{"id": "call_1_0", "name": "love_quote_for_olato_quotes", "arguments": {}}],
        "train": False,  # trained in the record of step 2 already
    }


def test_toolllama_cumulative_prefixes_train_each_turn_once(tmp_path):
    """The "Step N" records of one query repeat the previous record and add turns: the repeated assistant
    turns are `train: false`, so over the file every assistant turn of the chain is trained exactly once."""
    _summary, recs, _ = run_convert(tmp_path, [LLAMA], "toolbench")
    trained = [
        [i for i, t in enumerate(r["conversation"]) if t["role"] == "assistant" and t.get("train", True)] for r in recs
    ]
    assert trained == [[1], [3], [5], [7]]  # steps 2, 4, 6, 9: only the newest assistant turn of each
    assert [r["meta"].get("untrained_prefix_turns") for r in recs] == [None, 2, 4, 6]
    assert [len(r["conversation"]) for r in recs] == [2, 4, 6, 8]  # records are kept whole (not collapsed)
    # the last record alone holds the whole chain; trained over the file: each assistant turn once
    whole = recs[-1]["conversation"]
    assert sum(len(t) for t in trained) == sum(t["role"] == "assistant" for t in whole)


def test_toolllama_records_of_other_queries_are_not_prefixes(tmp_path):
    rows = json.loads(LLAMA.read_text(encoding="utf-8"))
    other = json.loads(json.dumps(rows[1]))
    other["id"] = "Step 4: another query"
    path = tmp_path / "mixed_steps.json"
    path.write_text(json.dumps([rows[0], other, rows[2]]), encoding="utf-8")  # step 6 follows another query
    _summary, recs, _ = run_convert(tmp_path, [path], "toolbench")
    assert [r["meta"].get("untrained_prefix_turns") for r in recs] == [None, None, None]
    assert all(t.get("train", True) for r in recs for t in r["conversation"])


def test_queries_are_rejected(tmp_path):
    summary, _recs, rejects = run_convert(tmp_path, [QUERIES], "toolbench")
    assert (summary.read, summary.converted) == (2, 0)
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("record 0", "no_trajectory"),
        ("record 1", "no_trajectory"),
    ]
    assert all(CONVERTERS["toolbench"].sniff(q) < 0.5 for q in json.loads(QUERIES.read_text()))


def _variant(tmp_path, name, edit):
    doc = json.loads(G1.read_text(encoding="utf-8"))
    edit(doc)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def test_malformed_answers_are_rejected_and_others_kept(tmp_path):
    def bad_args(d):
        d["answer_generation"]["train_messages"][-1][2]["function_call"]["arguments"] = '{"is_id": '

    def repr_call(d):  # older dumps store function_call as a Python repr and content as "None"
        msg = d["answer_generation"]["train_messages"][-1][2]
        msg["function_call"], msg["content"] = repr(msg["function_call"]), "None"

    variants = [
        _variant(tmp_path, "invalid", lambda d: d["answer_generation"].update(valid_data=False)),
        _variant(tmp_path, "empty", lambda d: d["answer_generation"].update(train_messages=[])),
        _variant(tmp_path, "badargs", bad_args),
        _variant(tmp_path, "repr", repr_call),
    ]
    summary, recs, rejects = run_convert(tmp_path, [G1, *variants], "toolbench")
    assert (summary.read, summary.converted) == (5, 2)
    assert [(r["file"].rsplit("/", 1)[-1], r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("invalid.json", "document", "invalid_data"),
        ("empty.json", "document", "no_train_messages"),
        ("badargs.json", "document", "invalid_arguments"),
    ]
    assert "message 2" in rejects[2]["message"]
    assert recs[1]["conversation"][1] == recs[0]["conversation"][1]

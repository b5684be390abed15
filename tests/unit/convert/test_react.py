"""react: ReAct prompts, WebShop run logs and FireAct Thought/Action/Observation text → tool calls."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert import CONVERTERS

RP = DATA / "react_prompts_hotpotqa_alfworld_webshop"
FA = DATA / "fireact_hotpotqa_react"
WEBSHOP_LOG = RP / "webshop_react_run_log_episodes.head6.jsonl"


def _by_id(recs):
    return {r["unique_trajectory_id"]: r for r in recs}


@pytest.mark.parametrize("fmt", ["react", "auto"])
def test_hotpotqa_and_fever_prompts(tmp_path, fmt):
    files = [RP / "prompts_naive.json", RP / "fever.json"]
    summary, recs, _rejects = run_convert(tmp_path, files, fmt)
    # counts are per record: a prompt document holding 51 + 12 examples is 63 records in
    assert (summary.read, summary.raw_objects, summary.converted, summary.num_rejected) == (63, 2, 63, 0)
    assert {v["format"] for v in summary.files.values()} == {"react"}
    recs = _by_id(recs)
    react = recs["hotpotqa-react---prompts_naive---webthink_simple-0"]
    assert react["source"] == "hotpotqa-react"
    assert [t["name"] for t in react["tools"]] == ["search", "lookup"]
    conv = react["conversation"]
    assert conv[0]["content"].startswith(
        'Question: Musician and satirist Allie Goertz wrote a song about the "The Simpsons"'
    )
    assert conv[1]["reasoning"] == "I only need to search Milhouse and find who it is named after."  # Thought 1
    assert "content" not in conv[1]
    assert conv[1]["tool_calls"] == [{"id": "call_1_0", "name": "search", "arguments": {"entity": "Milhouse"}}]
    assert conv[2]["content"].startswith("Milhouse Mussolini Van Houten is a recurring character")
    assert conv[3]["tool_calls"][0]["arguments"] == {"keyword": "named after"}
    assert conv[-1]["reasoning"] == (
        "Milhouse was named after U.S. president Richard Nixon, so the answer is Richard Nixon."
    )
    assert conv[-1]["content"] == "Final answer: Richard Nixon"
    assert react["meta"] == {
        "file": "prompts_naive.json",
        "environment": "hotpotqa",
        "method": "react",
        "prompt": "webthink_simple",
        "example": 0,
    }
    act = recs["hotpotqa-react---prompts_naive---webact_simple6-0"]
    assert act["meta"]["method"] == "act" and act["conversation"][1] == {
        "role": "assistant",
        "tool_calls": [{"id": "call_1_0", "name": "search", "arguments": {"entity": "Colorado orogeny"}}],
    }
    cot = recs["hotpotqa-react---prompts_naive---cotqa_simple-0"]
    assert cot["meta"]["method"] == "cot" and cot["tools"] == [] and len(cot["conversation"]) == 2
    assert cot["conversation"][1]["reasoning"].endswith("so the answer is Richard Nixon.")
    assert cot["conversation"][1]["content"] == "Final answer: Richard Nixon"
    direct = recs["hotpotqa-react---prompts_naive---webqa_simple-0"]
    assert direct["conversation"][1]["content"] == "Final answer: Richard Nixon"
    fever = recs["fever-react---fever---webthink_simple3-0"]
    assert fever["source"] == "fever-react"
    assert fever["task_instruction"].startswith("Determine if there is Observation that SUPPORTS or REFUTES")
    assert (
        fever["conversation"][0]["content"] == "Claim: Nikolaj Coster-Waldau worked with the Fox Broadcasting Company."
    )
    assert fever["conversation"][-1]["content"] == "Final answer: SUPPORTS" and fever["conversation"][-1]["reasoning"]


def test_alfworld_prompts(tmp_path):
    summary, recs, _ = run_convert(tmp_path, [RP / "alfworld.json"], "auto")
    assert (summary.read, summary.raw_objects, summary.converted) == (24, 1, 24)
    put = _by_id(recs)["alfworld-react---alfworld---react_put_0-0"]
    assert put["source"] == "alfworld-react" and [t["name"] for t in put["tools"]] == ["act"]
    conv = put["conversation"]
    assert conv[0]["content"].endswith("Your task is to: put some spraybottle on toilet.")
    # "> think: ..." is the next call's thought; the env's "OK." is dropped
    assert conv[1]["reasoning"].startswith("First I need to find a spraybottle.")
    assert conv[1]["tool_calls"][0]["arguments"] == {"action": "go to cabinet 1"}
    assert conv[2] == {
        "role": "tool",
        "content": "On the cabinet 1, you see a cloth 1, a soapbar 1, a soapbottle 1.",
        "tool_call_id": "call_1_0",
        "name": "act",
    }
    assert all(t.get("content") != "OK." for t in conv)
    assert conv[-1]["content"] == "You put the spraybottle 2 in/on the toilet 1."
    assert _by_id(recs)["alfworld-react---alfworld---act_put_0-0"]["meta"]["method"] == "act"


@pytest.mark.parametrize("fmt", ["react", "auto"])
def test_webshop_prompts_and_run_log(tmp_path, fmt):
    files = [RP / "webshop_prompts_from_notebook.json", WEBSHOP_LOG]
    summary, recs, _rejects = run_convert(tmp_path, files, fmt)
    assert (summary.read, summary.raw_objects, summary.converted, summary.num_rejected) == (8, 7, 8, 0)
    recs = _by_id(recs)
    prompt = recs["webshop-react---webshop_prompts_from_notebook---prompt1-0"]
    assert [t["name"] for t in prompt["tools"]] == ["search", "click"]
    assert prompt["conversation"][0]["content"].startswith("Webshop \nInstruction:")
    assert prompt["conversation"][3]["reasoning"].startswith("B078GWRC1J and B078GTKVXY are bright citrus")
    assert prompt["conversation"][3]["tool_calls"][0]["arguments"] == {"target": "B078GWRC1J"}
    assert prompt["conversation"][-1]["tool_calls"][0]["arguments"] == {"target": "Buy Now"}  # open end
    ep1 = recs["webshop-react---webshop_react_run_log_episodes.head6---1"]
    assert ep1["score"] == 5.0 and ep1["meta"]["reward"] == 1.0
    assert ep1["meta"]["run_totals"] == {
        "episodes": 2.0,
        "avg_reward": 0.5,
        "success_rate": 0.5,
        "fail_rate": 0.0,
    }
    assert ep1["conversation"][-1]["content"] == "Your score (min 0.0, max 1.0): 1.0"
    assert recs["webshop-react---webshop_react_run_log_episodes.head6---2"]["score"] == 3.75
    ep3 = recs["webshop-react---webshop_react_run_log_episodes.head6---3"]  # step limit hit: reward 0
    assert ep3["score"] == 0.0 and ep3["conversation"][-1]["role"] == "assistant"


@pytest.mark.parametrize("fmt", ["react", "auto"])
def test_fireact_files(tmp_path, fmt):
    files = [
        FA / "gpt_format_hotpotqa.head20.jsonl",
        FA / "gpt_format_multitask_multimethod.head20.jsonl",
        FA / "alpaca_format_hotpotqa.head10.json",
        FA / "trajs_hotpotqa_dev_ft-gpt-3.5.head10.json",
    ]
    summary, recs, _rejects = run_convert(tmp_path, files, fmt)
    assert (summary.read, summary.raw_objects, summary.converted, summary.num_rejected) == (60, 51, 60, 0)
    recs = _by_id(recs)
    gpt = recs["fireact-hotpotqa---gpt_format_hotpotqa.head20---1"]
    assert gpt["score"] == 5.0 and gpt["meta"]["reward"] is True
    assert [t["name"] for t in gpt["tools"]] == ["search"]
    conv = gpt["conversation"]
    assert conv[1]["tool_calls"][0]["arguments"] == {
        "query": "best kick boxer in the world unsportsmanlike conducts crimes of violence"
    }
    assert conv[2]["content"].startswith("Badr Hari (born 8 December 1984)")
    assert conv[-1]["reasoning"] == "Badr Hari is the person who fits the description."
    assert conv[-1]["content"] == "Final answer: Badr Hari"
    multi = recs["fireact-multitask---gpt_format_multitask_multimethod.head20---2"]
    assert multi["source"] == "fireact-multitask" and multi["meta"]["method"] == "cot"
    assert multi["meta"]["reward"] == 1.0 and multi["score"] == 5.0
    alpaca = recs["fireact-hotpotqa---alpaca_format_hotpotqa.head10---0"]
    assert alpaca["conversation"][1:] == gpt["conversation"][1:]
    ev = recs["fireact-hotpotqa---trajs_hotpotqa_dev_ft-gpt-3.5.head10---6238"]
    assert ev["score"] == 5.0
    assert ev["meta"]["gt"] == "seth macfarlane" and ev["meta"]["em"] is True
    assert any(r["score"] == 0.0 for r in recs.values() if r["meta"]["file"].startswith("trajs"))


def test_malformed_records_are_rejected_and_others_kept(tmp_path):
    good = json.loads((FA / "gpt_format_hotpotqa.head20.jsonl").read_text().splitlines()[0])
    msgs = good["messages"]
    bad_action = [msgs[0], {"role": "assistant", "content": "Thought: hmm\nAction: search for it"}]
    unknown = [msgs[0], {"role": "assistant", "content": "Thought: hmm\nAction: fly[to the moon]"}]
    chatty = [msgs[0], msgs[1], {"role": "user", "content": "Tell me more."}]
    rows = [
        good,
        {"messages": bad_action},
        {"messages": unknown},
        {"messages": chatty},
        {"messages": msgs[:1]},
    ]
    path = write_jsonl(tmp_path / "fireact_bad.jsonl", rows)
    summary, recs, rejects = run_convert(tmp_path, [path], "react")
    assert (summary.read, summary.converted) == (5, 1)
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "unparseable_action"),
        ("line 3", "unknown_action"),
        ("line 4", "unexpected_message"),
        ("line 5", "no_actions"),
    ]
    assert "message 1" in rejects[0]["message"] and "'fly'" in rejects[1]["message"]
    assert recs[0]["score"] == 5.0


def test_sniff_is_specific():
    react = CONVERTERS["react"]
    fireact = json.loads((FA / "gpt_format_hotpotqa.head20.jsonl").read_text().splitlines()[0])
    assert react.sniff(fireact) >= 0.8
    eto = json.loads((DATA / "eto_webshop_sft_sharegpt" / "eto.sample_raw.json").read_text())
    adp = json.loads((DATA / "agentinstruct_adp_normalized" / "agenttuning_os.sample_raw.json").read_text())
    assert all(react.sniff(r) < 0.5 for r in eto + adp)
    plain_chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert react.sniff(plain_chat) == 0.0
    assert react.sniff({"instruction": "q", "input": "", "output": "An answer."}) == 0.0


def test_bad_example_is_rejected_alone_and_its_siblings_kept(tmp_path):
    doc = {
        "webthink_ok": "Question: q?\nThought 1: t\nAction 1: Finish[a]\n",
        "webthink_mixed": (
            "Question: first?\nThought 1: t1\nAction 1: Finish[one]\n"
            "Question: second?\nAction 1: Search q\n"
            "Question: third?\nThought 1: t3\nAction 1: Finish[three]\n"
        ),
        "not_text": 42,
        "webthink_last": "Question: last?\nAction 1: Finish[z]\n",
    }
    bad = tmp_path / "prompts_bad.json"
    bad.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    summary, recs, rejects = run_convert(tmp_path, [RP / "fever.json", bad], "react")
    # fever.json: 12 examples; prompts_bad: 6 items (ok 0, mixed 0-2, not_text, last 0), 2 of them bad
    assert (summary.read, summary.raw_objects, summary.converted, summary.num_rejected) == (18, 2, 12 + 4, 2)
    assert summary.files[str(bad)] == {
        "format": "react",
        "read": 6,
        "converted": 4,
        "rejected": 2,
        "filtered_min_score": 0,
        "duplicates_removed": 0,
        "tools_inferred": 0,
    }
    assert [(r["file"], r["position"], r["reason"]) for r in rejects] == [
        (str(bad), "document item 2", "unparseable_action"),
        (str(bad), "document item 4", "wrong_type"),
    ]
    assert rejects[0]["message"] == "prompt 'webthink_mixed' example 1: action is not name[argument]: 'Search q'"
    assert rejects[1]["message"] == "prompt 'not_text' should be a string, got int"
    kept = {r["unique_trajectory_id"]: r for r in recs if r["meta"]["file"] == "prompts_bad.json"}
    assert sorted(kept) == [
        "hotpotqa-react---prompts_bad---webthink_last-0",
        "hotpotqa-react---prompts_bad---webthink_mixed-0",
        "hotpotqa-react---prompts_bad---webthink_mixed-2",
        "hotpotqa-react---prompts_bad---webthink_ok-0",
    ]
    third = kept["hotpotqa-react---prompts_bad---webthink_mixed-2"]
    assert third["conversation"] == [
        {"role": "user", "content": "Question: third?"},
        {"role": "assistant", "content": "Final answer: three", "reasoning": "t3"},
    ]
    assert third["meta"]["example"] == 2


def test_bad_eval_log_entry_is_rejected_alone(tmp_path):
    log = json.loads((FA / "trajs_hotpotqa_dev_ft-gpt-3.5.head10.json").read_text(encoding="utf-8"))
    keys = list(log)
    log[keys[1]]["traj"][1]["content"] = "Thought: hmm\nAction: fly[to the moon]"
    del log[keys[3]]["traj"]
    path = tmp_path / "trajs_hotpotqa_bad.json"
    path.write_text(json.dumps(log, indent=1), encoding="utf-8")
    summary, recs, rejects = run_convert(tmp_path, [path], "react")
    assert (summary.read, summary.raw_objects, summary.converted, summary.num_rejected) == (10, 1, 8, 2)
    assert [(r["position"], r["reason"]) for r in rejects] == [
        ("document item 1", "unknown_action"),
        ("document item 3", "missing_key"),
    ]
    assert rejects[0]["message"].startswith(f"entry {keys[1]!r}: message 1: action 'fly' not in ['search']")
    assert rejects[1]["message"] == f"entry {keys[3]!r}: no 'traj' list"
    ids = [r["meta"]["original_id"] for r in recs]
    assert ids == [k for i, k in enumerate(keys) if i not in (1, 3)]
    assert recs[0]["unique_trajectory_id"] == "fireact-hotpotqa---trajs_hotpotqa_bad---6238"

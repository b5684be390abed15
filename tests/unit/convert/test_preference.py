"""dpo-trl / dpo-llamafactory: preference pairs → Preference records."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert.formats.preference import DpoLlamaFactory, DpoTrl

TRL = DATA / "dpo_trl" / "dpo_trl_sample.jsonl"
RANKING = DATA / "llamafactory_dpo_sharegpt" / "dpo_en_demo.head10.json"
V1 = DATA / "llamafactory_dpo_sharegpt" / "v1_dpo_demo.jsonl"


def _convert_pairs(tmp_path, inputs, fmt):
    summary, recs, rejects = run_convert(tmp_path, inputs, fmt)
    assert all("chosen" in r for r in recs)  # every converted record is a preference pair
    return summary, recs, rejects


def _m(role, content):
    return {"role": role, "content": content}


@pytest.mark.parametrize("fmt", ["dpo-trl", "auto"])
def test_trl_sample(tmp_path, fmt):
    summary, recs, rejects = _convert_pairs(tmp_path, [TRL], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (3, 3, 0)
    assert summary.files[str(TRL)]["format"] == "dpo-trl"
    strings, conversational, tools = recs
    assert strings["unique_trajectory_id"] == "trl-preference---dpo_trl_sample---1"
    assert strings["conversation"] == [_m("user", "What is the boiling point of water at sea level in Celsius?")]
    assert (strings["chosen"], strings["rejected"]) == (
        _m("assistant", "100 °C."),
        _m("assistant", "About 90 °C."),
    )
    assert conversational["task_instruction"] == "Answer briefly."
    assert conversational["conversation"] == [_m("user", "Name a prime number larger than 10.")]
    assert (conversational["chosen"]["content"], conversational["rejected"]["content"]) == ("11", "12")
    assert conversational["meta"] == {"prompt_id": "p-0002", "score_chosen": 9.0, "score_rejected": 2.0}
    assert tools["tools"][0]["name"] == "get_weather"
    assert tools["chosen"]["tool_calls"] == [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo"}}]
    assert rejects == []


def test_trl_implicit_prompt(tmp_path):
    row = {
        "chosen": [
            _m("user", "hi"),
            _m("assistant", "hello"),
            _m("user", "bye?"),
            _m("assistant", "Goodbye!"),
        ],
        "rejected": [_m("user", "hi"), _m("assistant", "hello"), _m("user", "bye?"), _m("assistant", "no")],
    }
    path = write_jsonl(tmp_path / "implicit.jsonl", [row])
    _, (rec,), _ = _convert_pairs(tmp_path, [path], "auto")
    assert [t["content"] for t in rec["conversation"]] == ["hi", "hello", "bye?"]
    assert (rec["chosen"]["content"], rec["rejected"]["content"]) == ("Goodbye!", "no")


@pytest.mark.parametrize("fmt", ["dpo-llamafactory", "auto"])
def test_llamafactory_ranking_and_v1(tmp_path, fmt):
    summary, recs, rejects = _convert_pairs(tmp_path, [RANKING, V1], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (20, 20, 0)
    assert {f["format"] for f in summary.files.values()} == {"dpo-llamafactory"}
    first = recs[0]
    assert first["unique_trajectory_id"] == "llamafactory-dpo---dpo_en_demo.head10---0"
    assert first["conversation"][0]["content"].startswith("Hi! I'd like to create a new language game")
    assert first["chosen"]["content"].startswith("That sounds like a fun and engaging idea!")
    assert first["rejected"]["content"].startswith("Hello! I'd be happy to help you create")
    with_system = recs[1]
    assert with_system["task_instruction"] != "" and with_system["conversation"][0]["role"] == "user"
    multi = recs[4]
    assert [t["role"] for t in multi["conversation"]] == ["user", "assistant", "user", "assistant", "user"]
    v1 = recs[10]
    assert v1["unique_trajectory_id"] == "llamafactory-dpo---v1_dpo_demo---1"
    assert v1["task_instruction"].startswith("You are an AI assistant. You will be given a task.")
    assert v1["conversation"][0]["content"].startswith("Abdulah Hasanagic este")
    assert v1["chosen"]["content"].startswith("Abdulah Hasanagic is the proud owner of AS Company in Gorazde")
    assert v1["rejected"]["content"].startswith(" Abdulah Hasanagic is the proud owner of AS Company, a small")
    assert rejects == []


def test_malformed_pairs_are_rejected(tmp_path):
    v1_good = json.loads(V1.read_text(encoding="utf-8").splitlines()[0])
    v1_bad = json.loads(json.dumps(v1_good))
    v1_bad["rejected_messages"][1]["content"][0]["value"] = "a different question"
    trl_rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": [_m("assistant", "a"), _m("assistant", "again")], "rejected": "b"},
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"prompt": "p", "chosen": [_m("assistant", "a")], "rejected": 3},
    ]
    lf_rows = [
        v1_good,
        v1_bad,
        {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"}},
        {**v1_good, "chosen_messages": v1_good["chosen_messages"][:-1]},
    ]
    trl = write_jsonl(tmp_path / "trl_bad.jsonl", trl_rows)
    summary, _, rejects = _convert_pairs(tmp_path, [trl], "dpo-trl")
    assert (summary.read, summary.converted) == (4, 1)
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "bad_completion"),
        ("line 3", "identical_pair"),
        ("line 4", "wrong_type"),
    ]
    lf = write_jsonl(tmp_path / "lf_bad.jsonl", lf_rows)
    summary, _, rejects = _convert_pairs(tmp_path, [lf], "dpo-llamafactory")
    assert (summary.read, summary.converted) == (4, 1)
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "prompt_mismatch"),
        ("line 3", "missing_key"),
        ("line 4", "prompt_mismatch"),
    ]
    assert "message 1" in rejects[0]["message"]


def test_sniffs_are_specific():
    ranking = json.loads(RANKING.read_text(encoding="utf-8"))[0]
    v1 = json.loads(V1.read_text(encoding="utf-8").splitlines()[0])
    trl = json.loads(TRL.read_text(encoding="utf-8").splitlines()[0])
    assert (DpoLlamaFactory.sniff(ranking), DpoLlamaFactory.sniff(v1), DpoLlamaFactory.sniff(trl)) == (
        0.95,
        0.95,
        0.0,
    )
    assert (DpoTrl.sniff(ranking), DpoTrl.sniff(v1), DpoTrl.sniff(trl)) == (0.0, 0.0, 0.9)
    own = {
        "conversation": [_m("user", "q")],
        "chosen": _m("assistant", "a"),
        "rejected": _m("assistant", "b"),
    }
    assert DpoTrl.sniff(own) == 0.0 and DpoLlamaFactory.sniff(own) == 0.0
    kto = {"messages": [_m("user", "q"), _m("assistant", "a")], "label": True}
    assert DpoTrl.sniff(kto) == 0.0 and DpoLlamaFactory.sniff(kto) == 0.0

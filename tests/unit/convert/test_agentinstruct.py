"""agentinstruct: AgentInstruct (HF and ADP layouts) and ETO WebShop ShareGPT dialogs → text turns."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert import CONVERTERS, ConvertConfig, convert_files

ADP = DATA / "agentinstruct_adp_normalized"
ETO = DATA / "eto_webshop_sft_sharegpt" / "eto.sample_raw.json"


@pytest.mark.parametrize("fmt", ["agentinstruct", "auto"])
def test_adp_layout(tmp_path, fmt):
    files = [ADP / f"agenttuning_{s}.sample_raw.json" for s in ("os", "db", "mind2web")]
    summary, recs, rejects = run_convert(tmp_path, files, fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (15, 15, 0)
    assert {summary.files[str(f)]["format"] for f in files} == {"agentinstruct"}
    os42 = recs[0]
    assert os42["unique_trajectory_id"] == "agentinstruct-os---agenttuning_os.sample_raw---os_42"
    assert os42["source"] == "agentinstruct-os"
    assert os42["meta"] == {
        "original_id": "os_42",
        "environment": "os",
        "file": "agenttuning_os.sample_raw.json",
    }
    assert os42["split"] is None and os42["score"] is None and os42["tools"] == []
    conv = os42["conversation"]
    assert len(conv) == 14 and [t["role"] for t in conv[:3]] == ["user", "assistant", "user"]
    assert conv[0]["content"].startswith("You are an assistant that will act like a person")
    assert conv[2]["content"].startswith("The output of the OS:\ncpi cron.hourly")
    # ADP dropped the loss flag: everything is trained, in-context example included
    assert all("train" not in t for t in conv)
    assert {r["source"] for r in recs} == {"agentinstruct-os", "agentinstruct-db", "agentinstruct-mind2web"}
    assert recs[10]["meta"]["environment"] == "mind2web" and len(recs[10]["conversation"]) == 2
    assert rejects == []


def test_hf_layout_loss_flags(tmp_path):
    summary, recs, _ = run_convert(tmp_path, [ADP / "agentinstruct_hf_layout.derived.json"], "auto")
    assert (summary.read, summary.converted) == (2, 2)
    os42, db100 = recs
    trained = [t.get("train", True) for t in os42["conversation"] if t["role"] == "assistant"]
    assert trained == [False, False, False, True, True, True, True]  # in-context example not trained
    assert db100["conversation"][1] == {"role": "assistant", "content": "Ok.", "train": False}
    assert db100["conversation"][3]["content"].endswith('Final Answer: ["none"]')
    assert "train" not in db100["conversation"][3]


@pytest.mark.parametrize("fmt", ["agentinstruct", "auto"])
def test_eto_webshop_reward(tmp_path, fmt):
    summary, recs, _rejects = run_convert(tmp_path, [ETO], fmt)
    assert (summary.read, summary.converted, summary.num_rejected) == (3, 3, 0)
    first, second = recs[0], recs[1]
    assert first["unique_trajectory_id"] == "eto-webshop---eto.sample_raw---webshop_0"
    assert first["source"] == "eto-webshop" and first["score"] == 5.0
    assert second["score"] == 3.75
    assert second["meta"] == {
        "original_id": "webshop_3",
        "environment": "webshop",
        "file": "eto.sample_raw.json",
        "reward": 0.75,
        "score_scale": "5 * reward",
        "origin": "human",
    }
    assert first["conversation"][1] == {"role": "assistant", "content": "OK"}
    assert first["conversation"][3]["content"].startswith("Thought: I need to find a long clip-in hair extension")
    assert first["conversation"][3]["content"].endswith("Action: search[long clip-in hair extension]")


def test_source_override(tmp_path):
    out = tmp_path / "o.jsonl"
    cfg = ConvertConfig(inputs=[str(ETO)], output=str(out), format="agentinstruct", source="mine", progress=False)
    convert_files(cfg, log=lambda *_: None)
    assert {json.loads(line)["source"] for line in out.read_text().splitlines()} == {"mine"}


def test_malformed_records_are_rejected_and_others_kept(tmp_path):
    good = json.loads(ETO.read_text(encoding="utf-8"))[0]
    conv = good["conversations"]
    rows = [
        good,
        {"id": "os_1"},
        {"id": "os_2", "conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]},
        {"id": "travel_3", "conversations": conv},
        {"id": "kg_4", "conversations": [conv[0], conv[2], conv[1]]},
        {**good, "id": "webshop_5", "reward": "high"},
        {"id": "db_6", "conversations": [conv[0], {"from": "gpt", "value": None}]},
    ]
    summary, recs, rejects = run_convert(tmp_path, [write_jsonl(tmp_path / "bad.jsonl", rows)], "agentinstruct")
    assert (summary.read, summary.converted) == (7, 1)
    assert [(r["position"].rsplit(":", 1)[-1], r["reason"]) for r in rejects] == [
        ("line 2", "missing_key"),
        ("line 3", "unknown_role"),
        ("line 4", "bad_id"),
        ("line 5", "consecutive_turns"),
        ("line 6", "bad_reward"),
        ("line 7", "bad_turn"),
    ]
    assert "turn 1" in rejects[1]["message"] and "turn 1" in rejects[3]["message"]
    assert recs[0]["meta"]["original_id"] == "webshop_0"


def test_sniff_is_specific():
    cls = CONVERTERS["agentinstruct"]
    assert cls.sniff(json.loads(ETO.read_text())[0]) >= 0.9
    assert cls.sniff({"id": "glaive_1", "conversations": [{"from": "human", "value": "x"}]}) == 0.0
    assert cls.sniff({"messages": [{"role": "user", "content": "x"}]}) == 0.0
    others = ["react", "toolbench", "toolalpaca", "api-bank"]
    for rec in json.loads(ETO.read_text()) + json.loads((ADP / "agenttuning_os.sample_raw.json").read_text()):
        assert all(CONVERTERS[n].sniff(rec) < 0.5 for n in others)

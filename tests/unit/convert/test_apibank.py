"""api-bank: raw dialogues (one per file), processed prompts and level-3 chains → tool-call trajectories."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, write_jsonl
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert import CONVERTERS

AB = DATA / "api_bank"
LV1 = AB / "lv1-lv2-samples" / "level-1-given-desc"
AGENDA = LV1 / "AddAgenda-AddAlarm-GetUserToken-level-2-1.jsonl"
STOCK = LV1 / "QueryStock-OpenBankAccount-level-2-1.jsonl"
HOTEL = AB / "lv1-lv2-samples" / "level-2-toolsearcher" / "BookHotel-level-3-1.jsonl"
LEVEL1 = AB / "test-data" / "level-1-api.sel.json"
RESPONSE = AB / "test-data" / "level-2-response.sel.json"
LEVEL3 = AB / "test-data" / "level-3.head3.json"
TRAIN = AB / "training-data" / "lv3-api-train.sel.json"


@pytest.mark.parametrize("fmt", ["api-bank", "auto"])
def test_raw_dialogues_one_trajectory_per_file(tmp_path, fmt):
    summary, recs, _rejects = run_convert(tmp_path, [AGENDA, STOCK, HOTEL], fmt)
    # counts are per record: the 12 lines of a dialogue file are one record in
    assert summary.files[str(AGENDA)] == {
        "format": "api-bank",
        "read": 1,
        "converted": 1,
        "rejected": 0,
        "filtered_min_score": 0,
        "duplicates_removed": 0,
        "tools_inferred": 0,
    }
    assert (summary.converted, summary.num_rejected) == (3, 0)
    agenda, stock, hotel = recs
    assert agenda["unique_trajectory_id"] == "api-bank---AddAgenda-AddAlarm-GetUserToken-level-2-1---level-1-given-desc"
    assert agenda["meta"] == {
        "file": "AddAgenda-AddAlarm-GetUserToken-level-2-1.jsonl",
        "setting": "level-1-given-desc",
        "level": 2,
    }
    assert [t["name"] for t in agenda["tools"]] == ["GetUserToken", "AddAgenda", "AddAlarm"]
    assert agenda["tools"][0] == {
        "name": "GetUserToken",
        "description": "",
        "parameters": {"type": "object", "properties": {"username": {}, "password": {}}},
    }
    conv = agenda["conversation"]
    assert [t["role"] for t in conv][4:] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    # the AI utterance before the API record is the calling turn's content
    assert conv[5]["content"] == "Thank you."
    assert conv[5]["tool_calls"] == [
        {
            "id": "call_5_0",
            "name": "GetUserToken",
            "arguments": {"username": "JaneSmith", "password": "password"},
        }
    ]
    assert conv[6]["content"] == '{"token": "o8i7u6y5t4r3e2w1q0"}' and conv[8]["content"] == "success"
    # two AI lines in a row are merged; their inline "[QueryStock(...)]" stays text
    assert stock["conversation"][1]["content"].startswith("Sure, I can help you with that. [QueryStock(")
    assert "\n\nThe stock price of AAPL on January 4, 2023 is $185.2." in stock["conversation"][1]["content"]
    # ToolSearcher results describe the tools found
    booking = next(t for t in hotel["tools"] if t["name"] == "BookHotel")
    assert booking["description"].startswith("This API orders a hotel room.")
    assert booking["parameters"]["properties"]["room_count"] == {
        "type": "integer",
        "description": "The number of rooms to order.",
    }
    assert hotel["tools"][0]["name"] == "ToolSearcher"


def test_processed_prompts(tmp_path):
    summary, recs, _rejects = run_convert(tmp_path, [LEVEL1, RESPONSE, TRAIN], "auto")
    assert (summary.read, summary.converted, summary.num_rejected) == (9, 9, 0)
    first = recs[0]
    assert first["unique_trajectory_id"] == (
        "api-bank---level-1-api.sel---ModifyRegistration-QueryHealthData-CancelRegistration-level-2-2.jsonl#0"
    )
    assert first["task_instruction"] == "The current year is 2023."
    assert [t["name"] for t in first["tools"]] == [
        "QueryHealthData",
        "CancelRegistration",
        "ModifyRegistration",
    ]
    last = first["conversation"][-1]
    assert last["content"] == "Alright. I'll modify your appointment now."
    assert last["tool_calls"][0]["arguments"] == {
        "appointment_id": "34567890",
        "new_appointment_date": "2023-03-26",
        "new_appointment_doctor": "Dr. Lee",
    }
    # quotes inside quotes are read leniently; the list inside becomes data
    health = recs[1]["conversation"][-1]["tool_calls"][0]
    assert health["name"] == "RecordHealthData"
    assert health["arguments"]["health_data"] == [
        {"name": "blood_pressure", "value": "120/80"},
        {"name": "heart_rate", "value": "80"},
    ]
    response = recs[4]
    assert response["conversation"][-2]["role"] == "tool"
    assert response["conversation"][-1]["content"].startswith("Great! I've got your token.")
    lv3 = recs[6]
    assert lv3["unique_trajectory_id"] == "api-bank---lv3-api-train.sel---1" and lv3["task_instruction"] == ""
    assert [t["name"] for t in lv3["tools"]] == ["ToolSearcher", "HealthcareProviderAppointmentChecker"]
    assert lv3["conversation"][2]["content"].startswith('{"name": "HealthcareProviderAppointmentChecker"')
    assert lv3["conversation"][-1]["tool_calls"][0]["arguments"] == {
        "specialty": "cardiologist",
        "location": "Los Angeles",
    }
    unquoted = recs[7]["conversation"][-1]["tool_calls"][0]
    assert unquoted == {
        "id": "call_3_0",
        "name": "MedicationReminderService",
        "arguments": {"patient_name": "John Smith", "medication": "hypertension"},
    }


def test_level3_chains(tmp_path):
    summary, recs, _ = run_convert(tmp_path, [LEVEL3], "api-bank")
    assert (summary.read, summary.converted) == (3, 3)
    conv = recs[0]["conversation"]
    assert conv[0] == {
        "role": "user",
        "content": "Query meeting of John and send email reminder to john@example.com.",
    }
    assert [c["tool_calls"][0]["name"] for c in conv if c.get("tool_calls")] == [
        "ToolSearcher",
        "QueryMeeting",
        "ToolSearcher",
        "EmailReminder",
        "EmailReminder",
    ]
    assert conv[4]["content"].startswith('{"meetings": [{"meeting_id": 1')
    assert conv[-1]["content"].startswith("For the meeting query of John, I found two meetings.")
    assert [t["name"] for t in recs[0]["tools"]] == ["ToolSearcher", "QueryMeeting", "EmailReminder"]


def test_bad_turn_is_rejected_at_its_line(tmp_path):
    lines = AGENDA.read_text(encoding="utf-8").splitlines()
    bad = [
        *lines[:6],
        '{"role": "API", "api_name": "GetUserToken", "param_dict": "username=JaneSmith", "result": {}}',
    ]
    bad += lines[7:]
    bad_path = write_jsonl(tmp_path / "dialogues" / "Bad-level-1-1.jsonl", bad)
    broken = write_jsonl(tmp_path / "dialogues" / "Broken-level-1-2.jsonl", [*lines[:3], "{not json", *lines[4:]])
    summary, recs, rejects = run_convert(tmp_path, [bad_path, AGENDA, broken], "api-bank")
    assert summary.files[str(bad_path)] == {
        "format": "api-bank",
        "read": 1,
        "converted": 0,
        "rejected": 1,
        "filtered_min_score": 0,
        "duplicates_removed": 0,
        "tools_inferred": 0,
    }
    assert len(recs) == 1 and recs[0]["meta"]["file"] == AGENDA.name
    assert [(r["file"], r["position"], r["reason"]) for r in rejects] == [
        (str(bad_path), "line 7", "wrong_type"),
        (str(broken), "line 1", "incomplete_dialogue"),
        (str(broken), "line 4", "invalid_json"),
    ]
    assert "dialogue line 7" in rejects[0]["message"] and "param_dict" in rejects[0]["message"]


def test_malformed_prompts_are_rejected_and_others_kept(tmp_path):
    good = json.loads(TRAIN.read_text(encoding="utf-8"))[0]
    rows = [
        good,
        {**good, "output": "API-Request: [ToolSearcher keywords]"},
        {k: v for k, v in good.items() if k != "input"},
        {"requirement": "r", "response": "ok", "apis": [{"api_name": "X", "input": {}}]},
    ]
    summary, _recs, rejects = run_convert(tmp_path, [write_jsonl(tmp_path / "bad.jsonl", rows)], "api-bank")
    assert (summary.read, summary.converted) == (4, 1)
    assert [(r["position"], r["reason"]) for r in rejects] == [
        ("line 2", "unparseable_call"),
        ("line 3", "missing_key"),
        ("line 4", "bad_api"),
    ]


def test_sniff_is_specific():
    ab = CONVERTERS["api-bank"]
    assert ab.sniff(json.loads(AGENDA.read_text().splitlines()[0])) >= 0.9
    assert ab.sniff({"role": "user", "content": "hi"}) == 0.0
    assert ab.sniff({"instruction": "Summarize.", "input": "text", "output": "summary"}) == 0.0
    others = ["react", "toolbench", "agentinstruct", "toolalpaca"]
    samples = [json.loads(line) for line in HOTEL.read_text().splitlines()] + json.loads(TRAIN.read_text())
    assert all(CONVERTERS[n].sniff(s) < 0.5 for s in samples for n in others)

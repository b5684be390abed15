"""toolalpaca: toolsets with Instances/intermediate_steps → one trajectory per instance."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA
from tests.unit.convert.helpers import run_convert
from xlam_hpc.convert import CONVERTERS

TA = DATA / "toolalpaca"
SIM = TA / "toolalpaca-7b-sim.toolsets0-3.json"
EVAL = TA / "eval_simulated.head2.json"


@pytest.mark.parametrize("fmt", ["toolalpaca", "auto"])
def test_instances_convert(tmp_path, fmt):
    summary, recs, rejects = run_convert(tmp_path, [SIM], fmt)
    # 10 Axolotl instances + 12 Améthyste instances, 2 of which failed upstream ({"error": ...}): those two are
    # rejected alone, the toolset's other 10 are kept
    # counts are per record (instance): 22 in = 20 converted + 2 rejected, from 2 raw toolsets
    assert (summary.read, summary.raw_objects, summary.converted, summary.num_rejected) == (22, 2, 20, 2)
    assert summary.files[str(SIM)] == {
        "format": "toolalpaca",
        "read": 22,
        "converted": 20,
        "rejected": 2,
        "filtered_min_score": 0,
        "duplicates_removed": 0,
        "tools_inferred": 0,
    }
    assert summary.rejected == {"generation_error": 2}
    assert [(r["file"], r["position"], r["reason"]) for r in rejects] == [
        (str(SIM), "record 1 item 1", "generation_error"),
        (str(SIM), "record 1 item 8", "generation_error"),
    ]
    assert rejects[0]["message"] == (
        "toolset 'Améthyste' instance 1: generation failed upstream: "
        "Could not parse LLM output: ` I should generate a custom image for a Discord user ID `"
    )
    assert rejects[1]["message"].startswith("toolset 'Améthyste' instance 8: generation failed upstream:")
    first = recs[0]
    assert first["unique_trajectory_id"] == "toolalpaca---toolalpaca-7b-sim.toolsets0-3---Axolotl---0"
    assert first["source"] == "toolalpaca" and first["task_instruction"] == ""
    assert first["meta"] == {"toolset": "Axolotl", "category": "Animals", "instance": 0}
    tools = {t["name"]: t for t in first["tools"]}
    assert list(tools) == ["getRandomAxolotlImage", "searchAxolotlImages", "getAxolotlFacts"]
    search = tools["searchAxolotlImages"]
    assert search["description"].startswith("Search for axolotl images based on specific criteria")
    assert "\nOutput: Successful response." in search["description"] and "Parameters:" not in search["description"]
    assert search["parameters"]["properties"]["color"] == {
        "type": "string",
        "enum": ["wild", "leucistic", "albino"],
        "description": "The color of the axolotl (e.g., 'wild', 'leucistic', 'albino', etc.).",
    }
    assert search["parameters"]["properties"]["page"]["type"] == "integer"
    assert tools["getAxolotlFacts"]["parameters"]["required"] == []
    conv = first["conversation"]
    assert [t["role"] for t in conv] == ["user", "assistant", "tool", "assistant"]
    assert conv[0]["content"] == "Hey, can you show me a random picture of an axolotl?"
    assert conv[1] == {
        "role": "assistant",
        "reasoning": "I can use the getRandomAxolotlImage tool to retrieve a random axolotl image.",
        "tool_calls": [{"id": "call_1_0", "name": "getRandomAxolotlImage", "arguments": {}}],
    }
    assert conv[2]["content"].startswith('Status Code: 200. Response: {"url":"https://theaxolotlapi.netlify.app/')
    assert conv[3]["content"].startswith("Here is a random picture of an axolotl:")
    # the instance's "Final Thought" (only in meta before) is the final turn's reasoning
    assert conv[3]["reasoning"] == (
        "The response contains the URL of the image, the source of the image, and a description of the image."
    )
    amethyste = [r for r in recs if r["meta"]["toolset"] == "Améthyste"]
    assert [r["meta"]["instance"] for r in amethyste] == [0, 2, 3, 4, 5, 6, 7, 9, 10, 11]  # not 1, 8
    assert amethyste[1]["unique_trajectory_id"] == "toolalpaca---toolalpaca-7b-sim.toolsets0-3---Améthyste---2"
    required = {t["name"]: t["parameters"]["required"] for t in amethyste[0]["tools"]}
    assert required["searchUser"] == ["query"] and required["generateAvatar"] == []


def test_eval_toolsets_without_instances_are_rejected(tmp_path):
    summary, _recs, rejects = run_convert(tmp_path, [EVAL], "toolalpaca")
    assert (summary.read, summary.converted) == (2, 0)
    assert [(r["position"], r["reason"]) for r in rejects] == [
        ("record 0", "no_instances"),
        ("record 1", "no_instances"),
    ]
    assert "'Axolotl'" in rejects[0]["message"]


def _copy(toolset, name):
    out = json.loads(json.dumps(toolset))
    out["Name"] = name  # ids are '<source>---<file>---<Name>---<instance>': distinct names, distinct ids
    return out


def test_malformed_toolsets_are_rejected_and_others_kept(tmp_path):
    toolsets = json.loads(SIM.read_text(encoding="utf-8"))
    bad_json = _copy(toolsets[0], "BadJson")
    bad_json["Instances"][2]["intermediate_steps"][0][0][1] = '{"category": '
    no_fd = {k: v for k, v in toolsets[0].items() if k != "Function_Description"}
    bad_step = _copy(toolsets[0], "BadStep")
    bad_step["Instances"][0]["intermediate_steps"][0] = ["getRandomAxolotlImage"]
    bad_step["Instances"][4] = "not an instance"
    unparseable = _copy(toolsets[0], "Unparseable")
    unparseable["Function_Description"]["getAxolotlFacts"] = "Facts.\nParameters: {not json}\nOutput: x"
    empty = _copy(toolsets[0], "Empty")
    empty["Instances"] = []
    path = tmp_path / "bad.json"
    rows = [toolsets[1], bad_json, no_fd, bad_step, unparseable, empty]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    summary, recs, rejects = run_convert(tmp_path, [path], "toolalpaca")
    # Améthyste 10 (+2 generation errors), BadJson 9 of 10, BadStep 8 of 10, Unparseable 10
    # per record: 12 + 10 + 10 + 10 instances, and 2 toolsets rejected whole (no Function_Description, empty)
    assert (summary.read, summary.raw_objects, summary.converted, summary.num_rejected) == (44, 6, 37, 7)
    assert [(r["position"], r["reason"]) for r in rejects] == [
        ("record 0 item 1", "generation_error"),
        ("record 0 item 8", "generation_error"),
        ("record 1 item 2", "invalid_json_field"),
        ("record 2", "missing_key"),
        ("record 3 item 0", "bad_step"),
        ("record 3 item 4", "not_an_object"),
        ("record 5", "no_instances"),
    ]
    assert rejects[2]["message"].startswith("toolset 'BadJson' instance 2: 'step 0 action input' is not valid JSON")
    assert rejects[4]["message"] == (
        "toolset 'BadStep' instance 0: step 0 is not [[action, input, thought], observation]"
    )
    assert rejects[6]["message"] == "toolset 'Empty' has an empty Instances list"
    by_set: dict[str, list[int]] = {}
    for r in recs:
        by_set.setdefault(r["meta"]["toolset"], []).append(r["meta"]["instance"])
    assert by_set["BadJson"] == [0, 1, 3, 4, 5, 6, 7, 8, 9]  # siblings of the bad instance 2 are kept
    assert by_set["BadStep"] == [1, 2, 3, 5, 6, 7, 8, 9]
    assert by_set["Unparseable"] == list(range(10))
    kept = next(r for r in recs if r["unique_trajectory_id"].endswith("---BadJson---3"))
    assert kept["conversation"][0]["content"] == toolsets[0]["Instances"][3]["input"]
    facts = next(t for t in recs[-1]["tools"] if t["name"] == "getAxolotlFacts")
    assert facts["parameters"] == {"type": "object"}  # free-form when the Parameters text does not parse


def test_sniff_is_specific():
    ta = CONVERTERS["toolalpaca"]
    assert ta.sniff(json.loads(EVAL.read_text())[0]) >= 0.9
    others = ["react", "toolbench", "agentinstruct", "api-bank"]
    assert all(CONVERTERS[n].sniff(t) < 0.5 for t in json.loads(SIM.read_text()) for n in others)

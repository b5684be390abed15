"""toolalpaca: toolsets with Instances/intermediate_steps → one trajectory per instance."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA
from xlam_hpc.convert import CONVERTERS, ConvertConfig, convert_files
from xlam_hpc.schema import decode_record

TA = DATA / "toolalpaca"
SIM = TA / "toolalpaca-7b-sim.toolsets0-3.json"
EVAL = TA / "eval_simulated.head2.json"


def _convert(tmp_path, inputs, fmt):
    out = tmp_path / "out.jsonl"
    cfg = ConvertConfig(inputs=[str(p) for p in inputs], output=str(out), format=fmt, progress=False)
    summary = convert_files(cfg, log=lambda *_: None)
    lines = out.read_text(encoding="utf-8").splitlines()
    for line in lines:
        decode_record(line)
    rejects = [json.loads(r) for r in (tmp_path / "out.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, [json.loads(line) for line in lines], rejects


@pytest.mark.parametrize("fmt", ["toolalpaca", "auto"])
def test_instances_convert(tmp_path, fmt):
    summary, recs, _rejects = _convert(tmp_path, [SIM], fmt)
    # 10 Axolotl instances + 12 Améthyste instances, 2 of which failed upstream ({"error": ...}): skipped
    assert (summary.read, summary.converted, summary.num_rejected) == (2, 20, 0)
    assert summary.files[str(SIM)]["format"] == "toolalpaca"
    first = recs[0]
    assert first["unique_trajectory_id"] == "toolalpaca---toolalpaca-7b-sim.toolsets0-3---Axolotl---0"
    assert first["source"] == "toolalpaca" and first["task_instruction"] == ""
    assert first["meta"] == {
        "toolset": "Axolotl",
        "category": "Animals",
        "instance": 0,
        "final_thought": "The response contains the URL of the image, the source of the image, "
        "and a description of the image.",
    }
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
        "content": "I can use the getRandomAxolotlImage tool to retrieve a random axolotl image.",
        "tool_calls": [{"id": "call_1_0", "name": "getRandomAxolotlImage", "arguments": {}}],
    }
    assert conv[2]["content"].startswith('Status Code: 200. Response: {"url":"https://theaxolotlapi.netlify.app/')
    assert conv[3]["content"].startswith("Here is a random picture of an axolotl:")
    amethyste = [r for r in recs if r["meta"]["toolset"] == "Améthyste"]
    assert [r["meta"]["instance"] for r in amethyste] == [0, 2, 3, 4, 5, 6, 7, 9, 10, 11]  # not 1, 8
    required = {t["name"]: t["parameters"]["required"] for t in amethyste[0]["tools"]}
    assert required["searchUser"] == ["query"] and required["generateAvatar"] == []


def test_eval_toolsets_without_instances_are_rejected(tmp_path):
    summary, _recs, rejects = _convert(tmp_path, [EVAL], "toolalpaca")
    assert (summary.read, summary.converted) == (2, 0)
    assert [(r["position"], r["reason"]) for r in rejects] == [
        ("record 0", "no_instances"),
        ("record 1", "no_instances"),
    ]
    assert "'Axolotl'" in rejects[0]["message"]


def test_malformed_toolsets_are_rejected_and_others_kept(tmp_path):
    toolsets = json.loads(SIM.read_text(encoding="utf-8"))
    bad_json = json.loads(json.dumps(toolsets[0]))
    bad_json["Instances"][2]["intermediate_steps"][0][0][1] = '{"category": '
    no_fd = {k: v for k, v in toolsets[0].items() if k != "Function_Description"}
    bad_step = json.loads(json.dumps(toolsets[0]))
    bad_step["Instances"][0]["intermediate_steps"][0] = ["getRandomAxolotlImage"]
    unparseable = json.loads(json.dumps(toolsets[0]))
    unparseable["Function_Description"]["getAxolotlFacts"] = "Facts.\nParameters: {not json}\nOutput: x"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([toolsets[1], bad_json, no_fd, bad_step, unparseable], indent=1), encoding="utf-8")
    summary, recs, rejects = _convert(tmp_path, [path], "toolalpaca")
    assert (summary.read, summary.converted) == (5, 10 + 10)
    assert [(r["position"], r["reason"]) for r in rejects] == [
        ("record 1", "invalid_json_field"),
        ("record 2", "missing_key"),
        ("record 3", "bad_step"),
    ]
    assert "instance 2" in rejects[0]["message"] and "step 0" in rejects[0]["message"]
    facts = next(t for t in recs[-1]["tools"] if t["name"] == "getAxolotlFacts")
    assert facts["parameters"] == {"type": "object"}  # free-form when the Parameters text does not parse


def test_sniff_is_specific():
    ta = CONVERTERS["toolalpaca"]
    assert ta.sniff(json.loads(EVAL.read_text())[0]) >= 0.9
    others = ["react", "toolbench", "agentinstruct", "api-bank"]
    assert all(CONVERTERS[n].sniff(t) < 0.5 for t in json.loads(SIM.read_text()) for n in others)

"""convert pipeline end to end: `xlam-hpc convert` (cli.main) and `convert_files` with real and synthetic inputs.

Covers the options (--min-score, --dedup, --strict, --emit, --format, --max-record-bytes), the summary and
reject files, bad input lines, and the one-line errors (exit 2, no traceback) for unusable inputs/outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA, make_record, write_jsonl
from xlam_hpc.cli import main
from xlam_hpc.convert import CONVERTERS, ConvertConfig, convert_files
from xlam_hpc.schema import decode_record

GLAIVE = DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"
CRITIC = DATA / "xlam_actionstudio_unified_v2" / "criticlam_example_trajectories.json"
GLAIVE_ID = "sharegpt---glaive_toolcall_en_demo.head20---{}"


def _glaive() -> list[dict[str, Any]]:
    return json.loads(GLAIVE.read_text(encoding="utf-8"))


def _cli(capsys, *args: Any) -> tuple[int, str, str]:
    rc = main(["convert", *(str(a) for a in args), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        decode_record(line)
    return [json.loads(line) for line in lines]


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- summary, reject file, bad lines ---------------------------------------------------------------------


def test_summary_and_reject_file_for_bad_jsonl_lines(tmp_path):
    glaive = _glaive()
    bad_utf8 = b'{"conversations": [{"from": "human", "value": "caf\xe9"}]}'
    bad_byte = bad_utf8.index(b"\xe9")
    truncated = json.dumps(glaive[2])[:70]
    orphan = {"conversations": [{"from": "human", "value": "hi"}, {"from": "observation", "value": "{}"}]}
    path = tmp_path / "mixed.jsonl"
    with path.open("wb") as f:
        for line in [
            json.dumps(glaive[0]).encode(),
            json.dumps(glaive[1]).encode(),
            bad_utf8,
            json.dumps(glaive[3]).encode(),
            truncated.encode(),
            b"",  # blank lines are skipped but still counted as lines
            json.dumps({"messages": []}).encode(),
            json.dumps(orphan).encode(),
            json.dumps(glaive[7]).encode(),
        ]:
            f.write(line + b"\n")
    out = tmp_path / "out" / "mixed.jsonl"
    cfg = ConvertConfig(inputs=[str(path)], output=str(out), format="sharegpt", progress=False)
    logged: list[str] = []
    summary = convert_files(cfg, log=logged.append)
    assert logged == [f"{path}: format sharegpt"]
    assert summary.read == 8 and summary.converted == 4 and summary.num_rejected == 4
    recs = _records(out)
    assert [r["unique_trajectory_id"] for r in recs] == [
        "sharegpt---mixed---1",
        "sharegpt---mixed---2",
        "sharegpt---mixed---4",
        "sharegpt---mixed---9",
    ]
    assert recs[2]["conversation"][1]["tool_calls"][0]["name"] == "calculate_area"
    data = json.loads((tmp_path / "out" / "mixed.summary.json").read_text(encoding="utf-8"))
    assert isinstance(data.pop("seconds"), float)
    assert data == {
        "output": str(out),
        "outputs": {"trajectory": str(out)},
        "read": 8,
        "raw_objects": 8,
        "converted": 4,
        "rejected": 4,
        "rejected_by_reason": {"invalid_json": 1, "invalid_utf8": 1, "missing_key": 1, "unmatched_tool_turn": 1},
        "filtered_min_score": 0,
        "duplicates_removed": 0,
        "balanced": True,
        "tools_inferred": 0,
        "kinds": {"trajectory": 4},
        "files": {
            str(path): {
                "format": "sharegpt",
                "read": 8,
                "converted": 4,
                "rejected": 4,
                "filtered_min_score": 0,
                "duplicates_removed": 0,
                "tools_inferred": 0,
            }
        },
    }
    rejects = _lines(tmp_path / "out" / "mixed.rejects.jsonl")
    assert all(set(r) == {"file", "position", "record_id", "reason", "message"} for r in rejects)
    assert rejects[0] == {
        "file": str(path),
        "position": "line 3",
        "record_id": None,
        "reason": "invalid_utf8",
        "message": f"not UTF-8 at byte {bad_byte}",
    }
    assert (rejects[1]["position"], rejects[1]["reason"]) == ("line 5", "invalid_json")
    assert rejects[1]["message"].startswith("invalid JSON at column ")
    assert (rejects[2]["position"], rejects[2]["reason"]) == ("line 7", "missing_key")
    assert rejects[2]["message"].startswith("missing required key 'conversations'")
    assert (rejects[3]["position"], rejects[3]["reason"]) == ("line 8", "unmatched_tool_turn")
    assert rejects[3]["message"] == "conversations[1]: observation turn without a pending function_call"
    assert not list(out.parent.glob("*.tmp"))  # the output appeared by rename


def test_bad_first_line_does_not_stop_auto_detection(tmp_path, capsys):
    glaive = _glaive()
    path = tmp_path / "first_bad.jsonl"
    path.write_bytes(b"\xff\xfe not json\n" + b"".join(json.dumps(r).encode() + b"\n" for r in glaive[:3]))
    out = tmp_path / "out.jsonl"
    rc, _, err = _cli(capsys, path, "-o", out)
    assert rc == 0
    assert err.splitlines() == [f"{path}: format sharegpt (auto-detected)"]
    assert [r["unique_trajectory_id"] for r in _records(out)] == [f"sharegpt---first_bad---{i}" for i in (2, 3, 4)]
    (reject,) = _lines(tmp_path / "out.rejects.jsonl")
    assert (reject["position"], reject["reason"], reject["message"]) == (
        "line 1",
        "invalid_utf8",
        "not UTF-8 at byte 0",
    )


def test_record_over_max_record_bytes_is_rejected(tmp_path, capsys):
    glaive = _glaive()
    huge = {"conversations": [{"from": "human", "value": "x" * 100_000}, {"from": "gpt", "value": "ok"}]}
    path = write_jsonl(tmp_path / "big.jsonl", [glaive[0], huge, glaive[1]])
    assert max(len(json.dumps(r)) for r in glaive[:2]) < 16_384
    out = tmp_path / "out.jsonl"
    rc, stdout, _ = _cli(capsys, path, "-o", out, "--max-record-bytes", 16_384)
    assert rc == 0
    assert stdout.splitlines()[0] == (
        "read 3, converted 2, rejected 1 (record_too_large: 1), below --min-score 0, duplicates removed 0"
    )
    # the line after the oversized one keeps its own line number
    assert [r["unique_trajectory_id"] for r in _records(out)] == ["sharegpt---big---1", "sharegpt---big---3"]
    (reject,) = _lines(tmp_path / "out.rejects.jsonl")
    assert reject == {
        "file": str(path),
        "position": "line 2",
        "record_id": None,
        "reason": "record_too_large",
        "message": "line is larger than 16384 bytes (limit)",
    }


def test_json_document_over_the_limit_is_rejected_as_a_whole(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    # a JSON document is parsed whole: it may be at most 64 x --max-record-bytes (here 64 x 256 = 16 KiB)
    rc, _, err = _cli(capsys, GLAIVE, "-o", out, "--format", "sharegpt", "--max-record-bytes", 256)
    assert rc == 1 and err.splitlines()[-1] == "error: nothing converted"
    (reject,) = _lines(tmp_path / "out.rejects.jsonl")
    size = GLAIVE.stat().st_size
    assert (reject["position"], reject["reason"]) == ("document", "file_too_large")
    assert reject["message"] == f"JSON document of {size} bytes; convert it to JSONL"


def test_json_array_and_jsonl_inputs_give_the_same_records(tmp_path):
    glaive = _glaive()
    array = tmp_path / "a" / "glaive.json"
    array.parent.mkdir()
    array.write_text(json.dumps(glaive, indent=2), encoding="utf-8")
    jsonl = write_jsonl(tmp_path / "b" / "glaive.jsonl", glaive)
    got = {}
    for path in (array, jsonl):
        out = path.with_suffix(".out.jsonl")
        summary = convert_files(ConvertConfig(inputs=[str(path)], output=str(out), progress=False), log=lambda _: None)
        assert (summary.read, summary.converted, summary.num_rejected) == (20, 20, 0)
        assert summary.files[str(path)]["format"] == "sharegpt"
        got[path.suffix] = _records(out)
    # ids name the position: 0-based array index vs 1-based line number
    assert [r["unique_trajectory_id"] for r in got[".json"]] == [f"sharegpt---glaive---{i}" for i in range(20)]
    assert [r["unique_trajectory_id"] for r in got[".jsonl"]] == [f"sharegpt---glaive---{i}" for i in range(1, 21)]
    for a, b in zip(got[".json"], got[".jsonl"], strict=True):
        assert {**a, "unique_trajectory_id": ""} == {**b, "unique_trajectory_id": ""}
    assert got[".json"][3]["conversation"][1]["tool_calls"] == [
        {"id": "call_1_0", "name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}}
    ]


# --- options ---------------------------------------------------------------------------------------------


def test_min_score_filters_scored_records_and_keeps_unscored(tmp_path, capsys):
    rows = [make_record(i) for i in range(12)]  # scores 0..5, twice
    rows += [{**make_record(i), "score": None} for i in (20, 21)]
    path = write_jsonl(tmp_path / "scored.jsonl", rows)
    out = tmp_path / "out.jsonl"
    rc, stdout, _ = _cli(capsys, path, CRITIC, "-o", out, "--min-score", 3)
    assert rc == 0
    assert "below --min-score 7," in stdout.splitlines()[0]
    kept = {r["unique_trajectory_id"]: r["score"] for r in _records(out)}
    ns = "src---scored---"  # the records' own ids, namespaced by source and file
    assert kept == {
        ns + "src-3": 3.0,  # == --min-score: kept
        ns + "src-4": 4.0,
        ns + "src-5": 5.0,
        ns + "src-9": 3.0,
        ns + "src-10": 4.0,
        ns + "src-11": 5.0,
        ns + "src-20": None,
        ns + "src-21": None,
        # CriticLAM: example 0 has critic score "2" (filtered), example 1 "TODO" (no score: kept)
        "xlam-actionstudio---criticlam_example_trajectories---1": None,
    }
    summary = json.loads((tmp_path / "out.summary.json").read_text(encoding="utf-8"))
    assert (summary["filtered_min_score"], summary["converted"], summary["rejected"]) == (7, 9, 0)


def test_dedup_removes_the_duplicate_in_real_data(tmp_path, capsys):
    rc, stdout, _ = _cli(capsys, GLAIVE, "-o", tmp_path / "plain.jsonl")
    assert rc == 0 and len(_records(tmp_path / "plain.jsonl")) == 20
    rc, stdout, _ = _cli(capsys, GLAIVE, "-o", tmp_path / "dedup.jsonl", "--dedup")
    assert rc == 0
    assert stdout.splitlines()[0] == (
        "read 20, converted 19, rejected 0 (none), below --min-score 0, duplicates removed 1"
    )
    ids = [r["unique_trajectory_id"] for r in _records(tmp_path / "dedup.jsonl")]
    assert GLAIVE_ID.format(4) in ids and GLAIVE_ID.format(6) not in ids  # records 4 and 6 are identical upstream
    assert json.loads((tmp_path / "dedup.summary.json").read_text())["duplicates_removed"] == 1


def _respace(text: str) -> str:
    return "  " + text.replace(" ", "  \n\t ") + " \n"


def test_dedup_ignores_whitespace_ids_and_call_ids(tmp_path, capsys):
    glaive = _glaive()
    base = {**glaive[3], "id": "g-a"}
    spaced = json.loads(json.dumps(base))
    spaced["id"] = "g-b"
    for turn in spaced["conversations"]:
        if turn["from"] in ("human", "gpt"):
            turn["value"] = _respace(turn["value"])
    changed = json.loads(json.dumps(base))
    changed["id"] = "g-c"
    changed["conversations"][0]["value"] = changed["conversations"][0]["value"].replace("5 units", "6 units")
    chats = write_jsonl(tmp_path / "chats.jsonl", [base, spaced, changed, {**glaive[1], "id": "g-d"}])

    rec = make_record(1, turns=2)
    other_ids = json.loads(json.dumps(rec))
    other_ids["unique_trajectory_id"] = "elsewhere-77"
    for turn in other_ids["conversation"]:
        for call in turn.get("tool_calls", []):
            call["id"] = "gen-" + call["id"]
        if turn["role"] == "tool":
            turn["tool_call_id"] = "gen-" + turn["tool_call_id"]
    unified = write_jsonl(tmp_path / "unified.jsonl", [rec, other_ids, make_record(2, turns=2)])

    out = tmp_path / "out.jsonl"
    rc, _, _ = _cli(capsys, chats, unified, "-o", out, "--dedup")
    assert rc == 0
    ids = [r["unique_trajectory_id"] for r in _records(out)]
    assert ids == [f"sharegpt---chats---g-{x}" for x in "acd"] + ["src---unified---src-1", "src---unified---src-2"]
    summary = json.loads((tmp_path / "out.summary.json").read_text(encoding="utf-8"))
    assert (summary["duplicates_removed"], summary["converted"], summary["rejected"]) == (2, 5, 0)

    rc, _, _ = _cli(capsys, chats, unified, "-o", tmp_path / "all.jsonl")  # without --dedup all are kept
    assert rc == 0 and len(_records(tmp_path / "all.jsonl")) == 7


def test_duplicate_id_is_rejected_and_strict_fails(tmp_path, capsys):
    second = {**make_record(2), "unique_trajectory_id": "src-1"}  # other content, same id
    path = write_jsonl(tmp_path / "dup.jsonl", [make_record(1), second, make_record(3)])
    out = tmp_path / "out.jsonl"
    rc, _, err = _cli(capsys, path, "-o", out)
    assert rc == 0 and err.splitlines() == [f"{path}: format actionstudio (auto-detected)"]
    assert [r["unique_trajectory_id"] for r in _records(out)] == ["src---dup---src-1", "src---dup---src-3"]
    assert _records(out)[0]["conversation"][0]["content"] == "hello src 1 turn 0"  # the first one wins
    assert _records(out)[0]["meta"]["original_id"] == "src-1"
    assert _lines(tmp_path / "out.rejects.jsonl") == [
        {
            "file": str(path),
            "position": "line 2",
            "record_id": "src---dup---src-1",
            "reason": "duplicate_id",
            "message": "unique_trajectory_id already emitted earlier",
        }
    ]
    rc, _, err = _cli(capsys, path, "-o", out, "--strict", "--overwrite")
    assert rc == 1
    assert err.splitlines()[-1] == "error: --strict and 1 record(s) rejected"
    assert len(_records(out)) == 2  # the output is still written


def test_strict_passes_when_nothing_is_rejected(tmp_path, capsys):
    rc, stdout, err = _cli(capsys, GLAIVE, "-o", tmp_path / "out.jsonl", "--strict")
    assert rc == 0 and "error" not in err
    assert stdout.splitlines() == [
        "read 20, converted 20, rejected 0 (none), below --min-score 0, duplicates removed 0",
        "records in 20 = converted 20 + rejected 0 + below --min-score 0 + duplicates 0; tools inferred 0",
        f"output {tmp_path / 'out.jsonl'}",
        f"rejects {tmp_path / 'out.rejects.jsonl'}",
        f"summary {tmp_path / 'out.summary.json'}",
    ]


def test_nothing_converted_exits_1(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"conversations": "nope"}, {"conversations": [{"from": "x"}]}])
    out = tmp_path / "out.jsonl"
    rc, stdout, err = _cli(capsys, path, "-o", out, "--format", "sharegpt")
    assert rc == 1
    assert err.splitlines()[-1] == "error: nothing converted"
    assert stdout.splitlines()[0].startswith("read 2, converted 0, rejected 2 (")
    assert out.read_text() == ""
    assert [(r["position"], r["reason"]) for r in _lines(tmp_path / "out.rejects.jsonl")] == [
        ("line 1", "wrong_type"),
        ("line 2", "missing_key"),
    ]


def test_emit_actionstudio_nests_tools_and_calls_and_reads_back(tmp_path, capsys):
    rc, _, _ = _cli(capsys, GLAIVE, "-o", tmp_path / "as.jsonl", "--emit", "actionstudio")
    assert rc == 0
    first = _lines(tmp_path / "as.jsonl")[0]
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "search_recipes",
                "description": "Search for recipes based on ingredients",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "ingredients": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "The ingredients to search for",
                        }
                    },
                    "required": ["ingredients"],
                },
            },
        }
    ]
    assert first["conversation"][3] == {
        "role": "assistant",
        "tool_calls": [
            {
                "type": "function",
                "id": "call_3_0",
                "function": {
                    "name": "search_recipes",
                    "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]},
                },
            }
        ],
    }
    assert first["conversation"][4]["tool_call_id"] == "call_3_0"
    # ActionStudio output converts back (auto-detected) to exactly the unified records
    rc, _, err = _cli(capsys, tmp_path / "as.jsonl", "-o", tmp_path / "back.jsonl")
    assert rc == 0 and err.splitlines() == [f"{tmp_path / 'as.jsonl'}: format actionstudio (auto-detected)"]
    rc, _, _ = _cli(capsys, GLAIVE, "-o", tmp_path / "unified.jsonl")
    assert _records(tmp_path / "back.jsonl") == _records(tmp_path / "unified.jsonl")


def test_format_auto_reports_the_format_of_each_file(tmp_path, capsys):
    rc, _, err = _cli(capsys, GLAIVE, CRITIC, "-o", tmp_path / "out.jsonl")
    assert rc == 0
    assert err.splitlines() == [
        f"{GLAIVE}: format sharegpt (auto-detected)",
        f"{CRITIC}: format actionstudio (auto-detected)",
    ]
    summary = json.loads((tmp_path / "out.summary.json").read_text(encoding="utf-8"))
    assert {p: f["format"] for p, f in summary["files"].items()} == {
        str(GLAIVE): "sharegpt",
        str(CRITIC): "actionstudio",
    }
    assert (summary["read"], summary["converted"]) == (22, 22)
    rc, _, err = _cli(capsys, GLAIVE, "-o", tmp_path / "fixed.jsonl", "--format", "sharegpt")
    assert rc == 0 and err.splitlines() == [f"{GLAIVE}: format sharegpt"]


# --- unusable inputs and outputs: one line, no traceback -------------------------------------------------


def test_unknown_format_lists_the_valid_names(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    rc, _, err = _cli(capsys, GLAIVE, "-o", out, "--format", "shargpt")
    assert rc == 2
    line = _one_line_error(err)
    assert line == (
        "xlam-hpc convert: error: unknown format 'shargpt'. Valid formats: auto, " + ", ".join(sorted(CONVERTERS))
    )
    assert {"sharegpt", "actionstudio", "react", "toolalpaca"} <= set(CONVERTERS)
    assert not out.exists() and not (tmp_path / "out.rejects.jsonl").exists()


def test_undetectable_file_is_named(tmp_path, capsys):
    path = write_jsonl(tmp_path / "mystery.jsonl", [{"foo": 1, "bar": [2]}, {"foo": 3, "bar": []}])
    out = tmp_path / "out.jsonl"
    rc, _, err = _cli(capsys, path, "-o", out)
    assert rc != 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if "cannot detect the format" in ln]
    assert f"{path}: cannot detect the format (first record keys: ['bar', 'foo']); pass --format (" in line
    assert "sharegpt" in line
    assert not out.exists() or out.read_text() == ""


def test_undetectable_file_beside_a_good_one(tmp_path, capsys):
    path = write_jsonl(tmp_path / "mystery.jsonl", [{"foo": 1}])
    out = tmp_path / "out.jsonl"
    rc, _, err = _cli(capsys, path, GLAIVE, "-o", out)
    assert rc == 0 and "Traceback" not in err
    assert any(str(path) in ln and "cannot detect the format" in ln for ln in err.splitlines())
    assert len(_records(out)) == 20
    (reject,) = _lines(tmp_path / "out.rejects.jsonl")
    assert (reject["file"], reject["reason"]) == (str(path), "undetected_format")


def test_empty_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    rc, _, err = _cli(capsys, empty, "-o", tmp_path / "a.jsonl")
    assert rc != 0 and "Traceback" not in err
    assert any(f"{empty}: no readable record to detect the format from" in ln for ln in err.splitlines())
    rc, _, err = _cli(capsys, empty, "-o", tmp_path / "b.jsonl", "--format", "sharegpt")
    assert rc == 1 and err.splitlines()[-1] == "error: nothing converted"
    (reject,) = _lines(tmp_path / "b.rejects.jsonl")
    assert (reject["position"], reject["reason"], reject["message"]) == ("document", "empty_file", "file is empty")


def test_missing_input_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    out = tmp_path / "out.jsonl"
    rc, stdout, err = _cli(capsys, GLAIVE, missing, "-o", out)
    assert rc == 2 and stdout == ""
    assert _one_line_error(err) == f"xlam-hpc convert: error: {missing}: input file not found"
    assert not out.exists()


@pytest.mark.parametrize(("sub", "why"), [("out.jsonl", "File exists"), ("sub/out.jsonl", "Not a directory")])
def test_output_under_a_regular_file(tmp_path, capsys, sub, why):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / sub
    rc, stdout, err = _cli(capsys, GLAIVE, "-o", out)
    assert rc == 2 and stdout == ""
    assert _one_line_error(err) == f"xlam-hpc convert: error: cannot write output {out}: {why}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# Every OSError on an output path is a one-line ConfigError, raised before any work is done:
def test_unwritable_rejects_path(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rc, _, err = _cli(capsys, GLAIVE, "-o", tmp_path / "out.jsonl", "--rejects", blocker / "r.jsonl")
    assert rc == 2 and "cannot write" in _one_line_error(err)
    assert not (tmp_path / "out.jsonl.tmp").exists()


def test_unwritable_summary_path(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rc, _, err = _cli(capsys, GLAIVE, "-o", tmp_path / "out.jsonl", "--summary", blocker / "s.json")
    assert rc == 2 and "cannot write" in _one_line_error(err)


def test_output_is_a_directory(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    rc, _, err = _cli(capsys, GLAIVE, "-o", tmp_path / "d")
    assert rc == 2 and "cannot write output" in _one_line_error(err)

"""`convert` inputs and outputs (issue 13 §1): directory inputs with --glob, per-record counts that balance,
ids namespaced by source and file, SFT and DPO records split into two files, and no overwriting of the input or
of an existing output without --overwrite. Real samples from tests/data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA
from xlam_hpc.cli import main
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.errors import ConfigError, DataError
from xlam_hpc.schema import Preference, Trajectory, decode_record

TOOLBENCH = DATA / "toolbench"
HERMES = DATA / "hermes_function_calling_v1" / "hermes_fc_v1_card_examples.json"
GLAIVE = DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"
TRL = DATA / "dpo_trl" / "dpo_trl_sample.jsonl"
TOOLALPACA = DATA / "toolalpaca"


def _cli(capsys, *args: Any) -> tuple[int, str, str]:
    rc = main(["convert", *(str(a) for a in args), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _records(path: Path) -> list[Trajectory | Preference]:
    return [decode_record(line) for line in path.read_bytes().splitlines()]


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    (line,) = err.splitlines()
    return line


def _balanced(summary: dict[str, Any]) -> bool:
    parts = ("converted", "rejected", "filtered_min_score", "duplicates_removed")
    return summary["read"] == sum(summary[k] for k in parts) and all(
        f["read"] == sum(f[k] for k in parts) for f in summary["files"].values()
    )


# --- directory inputs ---------------------------------------------------------------------------------------


def test_directory_input_is_read_recursively_in_sorted_order(tmp_path, capsys):
    out = tmp_path / "tb.jsonl"
    rc, stdout, _ = _cli(capsys, TOOLBENCH, "-o", out)
    assert rc == 0
    summary = json.loads((tmp_path / "tb.summary.json").read_text(encoding="utf-8"))
    # every *.json below the folder (README.md and SOURCE.txt are not read), sorted by path
    assert list(summary["files"]) == [
        str(TOOLBENCH / "answer" / "G1_answer" / "11_ChatGPT_DFS_woFilter_w2.json"),
        str(TOOLBENCH / "answer" / "G2_answer" / "127_ChatGPT_DFS_woFilter_w2.json"),
        str(TOOLBENCH / "answer" / "G3_answer" / "21_ChatGPT_DFS_woFilter_w2.json"),
        str(TOOLBENCH / "instruction" / "G3_query.json"),
        str(TOOLBENCH / "raw_answer_v1" / "82217_ChatGPT_CoT@1.json"),
        str(TOOLBENCH / "toolllama_processed" / "G1_demo_DFS_woFilter_w2.json"),
    ]
    # the query file holds no trajectory: it is not detected as a format and counts as one rejected record
    assert summary["files"][str(TOOLBENCH / "instruction" / "G3_query.json")]["format"] is None
    assert _balanced(summary)
    assert f"records in {summary['read']} = converted {summary['converted']} + rejected {summary['rejected']}" in stdout
    assert all(r.source == "toolbench" for r in _records(out))


def test_glob_selects_the_files_of_a_directory(tmp_path, capsys):
    out = tmp_path / "dfs.jsonl"
    rc, _, _ = _cli(capsys, TOOLBENCH, "--glob", "answer/*/*_DFS_*.json", "-o", out)
    assert rc == 0
    summary = json.loads((tmp_path / "dfs.summary.json").read_text(encoding="utf-8"))
    assert [Path(f).name for f in summary["files"]] == [
        "11_ChatGPT_DFS_woFilter_w2.json",
        "127_ChatGPT_DFS_woFilter_w2.json",
        "21_ChatGPT_DFS_woFilter_w2.json",
    ]
    assert (summary["read"], summary["converted"], summary["rejected"]) == (3, 2, 1)  # G3 calls an unknown tool


def test_directory_without_matching_files_is_a_clear_error(tmp_path, capsys):
    rc, _, err = _cli(capsys, TOOLBENCH, "--glob", "*.parquet", "-o", tmp_path / "x.jsonl")
    assert rc == 2
    assert (
        _one_line_error(err)
        == f"xlam-hpc convert: error: {TOOLBENCH}: directory has no input file matching *.parquet (see --glob)"
    )
    assert not (tmp_path / "x.jsonl").exists()


def test_hidden_files_and_folders_are_skipped(tmp_path):
    src = tmp_path / "src"
    (src / ".cache").mkdir(parents=True)
    shutil.copy(GLAIVE, src / "a.json")
    shutil.copy(GLAIVE, src / ".cache" / "b.json")
    shutil.copy(GLAIVE, src / ".c.json")
    summary = convert_files(
        ConvertConfig(inputs=[str(src)], output=str(tmp_path / "o.jsonl"), progress=False), log=lambda _: None
    )
    assert list(summary.files) == [str(src / "a.json")]


# --- per-record counts ------------------------------------------------------------------------------------------


def test_counts_are_per_record_and_balance(tmp_path, capsys):
    """A ToolAlpaca toolset is one raw object holding many trajectories: each counts as a record in."""
    out = tmp_path / "ta.jsonl"
    rc, stdout, _ = _cli(capsys, TOOLALPACA, "-o", out, "--min-score", "0")
    assert rc == 0
    summary = json.loads((tmp_path / "ta.summary.json").read_text(encoding="utf-8"))
    assert summary["read"] > summary["raw_objects"]  # more records than raw objects
    assert (
        summary["read"]
        == summary["converted"] + summary["rejected"] + summary["filtered_min_score"] + summary["duplicates_removed"]
    )
    assert summary["balanced"] is True
    line = stdout.splitlines()[1]
    assert line == (
        f"records in {summary['read']} = converted {summary['converted']} + rejected {summary['rejected']} + "
        f"below --min-score 0 + duplicates 0; tools inferred 0"
    )


def test_tools_inferred_are_counted(tmp_path, capsys):
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    }
    path = tmp_path / "no_tools.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "tools": []}) + "\n", encoding="utf-8")
    rc, stdout, _ = _cli(capsys, path, "-o", tmp_path / "o.jsonl")
    assert rc == 0
    summary = json.loads((tmp_path / "o.summary.json").read_text(encoding="utf-8"))
    inferred = sum(bool(r.meta.get("tools_inferred")) for r in _records(tmp_path / "o.jsonl"))
    assert summary["tools_inferred"] == inferred >= 1
    assert stdout.splitlines()[1].endswith(f"tools inferred {inferred}")


# --- ids ------------------------------------------------------------------------------------------------------


def test_same_raw_id_in_two_files_is_two_records(tmp_path, capsys):
    a, b = tmp_path / "part-a.json", tmp_path / "part-b.json"
    shutil.copy(HERMES, a)
    shutil.copy(HERMES, b)
    out = tmp_path / "o.jsonl"
    rc, _, _ = _cli(capsys, a, b, "-o", out)
    assert rc == 0
    recs = _records(out)
    assert len(recs) == 6  # 3 + 3: no duplicate_id rejects
    raw = "753d8365-0e54-43b1-9514-3f9b819fd31c"
    assert [r.unique_trajectory_id for r in recs if r.meta.get("original_id") == raw] == [
        f"hermes-fc-v1---part-a---{raw}",
        f"hermes-fc-v1---part-b---{raw}",
    ]
    # dedup stays content-based: the second copy's records are duplicates of the first's
    rc, stdout, _ = _cli(capsys, a, b, "-o", tmp_path / "d.jsonl", "--dedup")
    assert rc == 0 and "duplicates removed 3" in stdout.splitlines()[0]


def test_same_file_name_in_two_folders_is_named_in_the_duplicate_id_reject(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        shutil.copy(HERMES, tmp_path / sub / "same.json")
    out = tmp_path / "o.jsonl"
    summary = convert_files(
        ConvertConfig(inputs=[str(tmp_path / "x"), str(tmp_path / "y")], output=str(out), progress=False),
        log=lambda _: None,
    )
    assert summary.rejected["duplicate_id"] == 3 and summary.converted == 3 and summary.balanced
    rejects = [json.loads(x) for x in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    dup = [r for r in rejects if r["reason"] == "duplicate_id"]
    assert (
        dup[0]["message"]
        == f"unique_trajectory_id already emitted earlier (from {tmp_path / 'x' / 'same.json'}: same file name)"
    )


# --- SFT and DPO in one run -----------------------------------------------------------------------------------


def test_sft_and_preference_inputs_are_split_into_two_files(tmp_path, capsys):
    out = tmp_path / "mix.jsonl"
    rc, stdout, err = _cli(capsys, GLAIVE, TRL, "-o", out)
    assert rc == 0
    pref = tmp_path / "mix.preference.jsonl"
    sft_recs, pref_recs = _records(out), _records(pref)
    assert sft_recs and all(isinstance(r, Trajectory) for r in sft_recs)
    assert pref_recs and all(isinstance(r, Preference) for r in pref_recs)
    assert f"output {out} (trajectory)" in stdout and f"output {pref} (preference)" in stdout
    assert f"{len(pref_recs)} preference pairs in {pref}" in err
    summary = json.loads((tmp_path / "mix.summary.json").read_text(encoding="utf-8"))
    assert summary["kinds"] == {"preference": len(pref_recs), "trajectory": len(sft_recs)}
    assert summary["outputs"] == {"trajectory": str(out), "preference": str(pref)}

    # again with --overwrite and SFT input only: one file, the earlier DPO output is removed
    rc, stdout, err = _cli(capsys, GLAIVE, "-o", out, "--overwrite")
    assert rc == 0 and not pref.exists() and f"removed {pref}" in err
    assert all(isinstance(r, Trajectory) for r in _records(out))


def test_preference_only_input_writes_the_usual_output(tmp_path, capsys):
    out = tmp_path / "dpo.jsonl"
    rc, _, _ = _cli(capsys, TRL, "-o", out)
    assert rc == 0 and not (tmp_path / "dpo.preference.jsonl").exists()
    assert all(isinstance(r, Preference) for r in _records(out))


# --- overwriting ----------------------------------------------------------------------------------------------


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert _cli(capsys, GLAIVE, "-o", out)[0] == 0
    before = out.read_bytes()
    rc, _, err = _cli(capsys, HERMES, "-o", out)
    assert rc == 2
    assert _one_line_error(err) == (
        f"xlam-hpc convert: error: {out}: output exists; pass --overwrite to replace it, or choose another -o"
    )
    assert out.read_bytes() == before  # untouched
    rc, _, _ = _cli(capsys, HERMES, "-o", out, "--overwrite")
    assert rc == 0 and len(_records(out)) == 3


def test_output_may_not_be_an_input(tmp_path, capsys):
    src = tmp_path / "data.json"
    shutil.copy(GLAIVE, src)
    before = src.read_bytes()
    rc, _, err = _cli(capsys, src, "-o", src, "--overwrite")
    assert rc == 2
    assert _one_line_error(err) == (
        f"xlam-hpc convert: error: {src}: the output file would overwrite the input {src}; choose another -o"
    )
    assert src.read_bytes() == before
    # the summary or rejects file named over an input
    rc, _, err = _cli(capsys, src, "-o", tmp_path / "o.jsonl", "--summary", src)
    assert rc == 2 and "the summary file would overwrite the input" in _one_line_error(err)


def test_output_inside_a_directory_input_is_not_read_back(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    shutil.copy(GLAIVE, src / "glaive.json")
    cfg = ConvertConfig(inputs=[str(src)], output=str(src / "out.jsonl"), progress=False, overwrite=True)
    assert convert_files(cfg, log=lambda _: None).converted == 20
    with pytest.raises(ConfigError, match="would overwrite the input"):  # out.jsonl is now one of the inputs
        convert_files(cfg, log=lambda _: None)


def test_missing_input_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: input file not found"):
        convert_files(ConvertConfig(inputs=[str(tmp_path / "nope.json")], output=str(tmp_path / "o.jsonl")))

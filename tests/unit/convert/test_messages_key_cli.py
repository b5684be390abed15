"""`convert --messages-key` (issue 13 §1): apply with messages-key.patch; goes in tests/unit/convert/."""

from __future__ import annotations

import json

from tests.conftest import write_jsonl
from xlam_hpc.cli import main

ROW = {
    "history": [{"role": "user", "content": "old"}, {"role": "assistant", "content": "old answer"}],
    "messages": [{"role": "user", "content": "new"}, {"role": "assistant", "content": "new answer"}],
}


def test_messages_key_picks_the_key_and_implies_openai(tmp_path, capsys):
    path = write_jsonl(tmp_path / "h.jsonl", [ROW])
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(path), "-o", str(out), "--messages-key", "history", "--no-progress"]) == 0
    [rec] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rec["conversation"][0]["content"] == "old" and rec["meta"]["messages_key"] == "history"
    assert "format openai" in capsys.readouterr().err


def test_messages_key_missing_rejects_and_other_format_is_refused(tmp_path, capsys):
    path = write_jsonl(tmp_path / "h.jsonl", [ROW])
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(path), "-o", str(out), "--messages-key", "dialog", "--no-progress"]) == 1
    [row] = [json.loads(r) for r in (tmp_path / "out.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["reason"] == "missing_key" and "'dialog'" in row["message"]
    other = ["--messages-key", "x", "--format", "sharegpt"]
    assert main(["convert", str(path), "-o", str(tmp_path / "b.jsonl"), *other]) == 2
    assert "--messages-key is an option of --format openai" in capsys.readouterr().err

"""What the report reads and computes: history dedup, events, summary numbers, mixture shares."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.unit.report.conftest import T0, history_rows, write_run
from xlam_hpc.report.load import load_run, read_history
from xlam_hpc.report.summary import events, fmt, mixture, run_summary, source_eval_losses


def test_history_keeps_the_last_line_per_kind_and_step(run_dir):
    history, notes = read_history(run_dir / "history.jsonl")
    assert notes == []
    train = history["train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    # steps 3 and 4 were written again by the resumed process: its values win
    assert [r["restart"] for r in train] == [0, 0, 1, 1, 1, 1, 2, 2]
    assert train[2]["loss"] == pytest.approx(2.2) and train[3]["tokens_per_s"] == 200.0
    assert [r["step"] for r in history["start"]] == [0, 2, 6]
    assert [(r["step"], r["signal"]) for r in history["stop"]] == [(4, "SIGTERM"), (6, "SIGUSR1")]


def test_a_resume_drops_the_steps_after_its_checkpoint_even_when_not_redone_yet(tmp_path):
    rows = history_rows()[:7]  # first process to step 4 (+ eval at 2, SIGTERM stop at 4)
    rows.append({"kind": "start", "step": 2, "restart": 0, "time": T0 + 100})  # resumed by hand from 2
    rows.append(history_rows()[8])  # the resumed process has redone step 3 so far
    out = write_run(tmp_path / "run", rows=rows, finished=False)
    history, _ = read_history(out / "history.jsonl")
    assert [(r["step"], r["restart"]) for r in history["train"]] == [(1, 0), (2, 0), (3, 1)]
    assert [r["step"] for r in history["eval"]] == [2]
    assert [r["step"] for r in history["start"]] == [0, 2] and len(history["stop"]) == 1
    assert events(load_run(out))[0] == (2, "restart", "started again from step 2")


def test_torn_lines_are_left_out_with_a_note(tmp_path):
    """A process killed mid-write leaves a torn line; the next process appends to it."""
    path = tmp_path / "history.jsonl"
    start = json.dumps({"kind": "start", "step": 0, "restart": 0, "time": T0})
    again = json.dumps({"kind": "start", "step": 0, "restart": 1, "time": T0 + 9})
    bad_step = json.dumps({"kind": "train", "step": "3"})
    path.write_text(f"{start}\n" + '{"kind": "train", "st' + f"{again}\n{bad_step}\n" + '{"kind": "tr')
    history, notes = read_history(path)
    assert [r["restart"] for r in history["start"]] == [0] and history["train"] == []
    assert [n.split(" (")[0] for n in notes] == [f"{path}:{i}: not a history line, left out" for i in (2, 3, 4)]
    assert "step '3' is not an integer" in notes[1]


def test_events_classify_stops_by_signal_and_mark_restarts(run_dir):
    assert events(load_run(run_dir)) == [
        (2, "restart", "restart 1 from step 2"),
        (4, "preemption", "preemption (SIGTERM) at step 4"),
        (6, "restart", "restart 2 from step 6"),
        (6, "time limit", "time limit (SIGUSR1) at step 6"),
    ]


def test_summary_numbers_come_from_the_deduplicated_history(run_dir):
    s = run_summary(load_run(run_dir))
    assert s["state"] == "finished" and s["steps"] == 8
    assert s["final_loss"] == pytest.approx(1.7)
    assert s["eval_loss"] == pytest.approx(2.05)
    assert s["tokens_per_s_mean"] == pytest.approx((100 + 200 * 5 + 300 * 2) / 8)
    assert s["tokens"] == sum(1000 + k for k in range(1, 9))
    assert (s["restarts"], s["preemptions"], s["time_limits"], s["other_stops"]) == (2, 1, 1, 0)
    assert (s["ledger_timeouts"], s["ledger_preemptions"], s["ledger_failures"]) == (1, 1, 0)
    assert s["wall_time_s"] == pytest.approx(320.0)
    assert s["active_time_s"] == pytest.approx(45 + 65 + 20)  # each process: its first to its last record


def test_final_loss_skips_a_step_without_loss_tokens(tmp_path):
    rows = history_rows()
    rows[-1]["loss"] = None
    s = run_summary(load_run(write_run(tmp_path / "run", rows=rows)))
    assert s["steps"] == 8 and s["final_loss"] == pytest.approx(2.5 - 0.7)


def test_a_run_with_only_its_config_says_none(tmp_path):
    run = load_run(write_run(tmp_path / "run", rows=[], finished=False, evals=False, weights={"alpha": 1}))
    assert mixture(run, []) == [("alpha", 1.0, None)]  # nothing drawn yet: realized unknown, not 0
    s = run_summary(run)
    assert s["state"] == "not finished"
    assert [s[k] for k in ("steps", "final_loss", "eval_loss", "tokens_per_s_mean", "wall_time_s")] == [None] * 5
    assert events(run) == [] and source_eval_losses(run) == {} and run.evals == []


def test_metrics_json_stands_in_when_there_is_no_history(tmp_path):
    out = write_run(tmp_path / "run", rows=[], evals=False)
    (out / "history.jsonl").unlink()
    s = run_summary(load_run(out))
    assert (s["steps"], s["final_loss"], s["tokens_per_s_mean"]) == (8, 1.7, 300.0)


def test_requested_mixture_is_the_normalized_weights(run_dir):
    notes: list[str] = []
    assert mixture(load_run(run_dir), notes) == [("alpha", 0.75, 0.75), ("beta", 0.25, 0.25)]
    assert notes == []


def test_empty_weights_mean_proportional_to_the_manifests_source_sizes(tmp_path, shard_dir):
    shards = [str(shard_dir / name) for name in ("alpha", "beta", "gamma")]
    run = load_run(write_run(tmp_path / "run", shards=shards))
    notes: list[str] = []
    rows = mixture(run, notes)
    assert [name for name, _, _ in rows] == ["alpha", "beta", "gamma"]
    assert [r for _, r, _ in rows] == pytest.approx([37 / 51, 11 / 51, 3 / 51])
    assert [z for _, _, z in rows] == pytest.approx([0.75, 0.25, 0.0])  # gamma never drawn
    assert notes == []


def test_unlisted_sources_at_weights_default_share_the_requested_mixture(tmp_path, shard_dir):
    shards = [str(shard_dir / name) for name in ("alpha", "beta", "gamma")]
    out = write_run(tmp_path / "run", shards=shards, weights={"alpha": 2.0})
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["data"]["weights_default"] = 1.0
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    rows = mixture(load_run(out), [])
    assert [(n, r) for n, r, _ in rows] == [("alpha", 0.5), ("beta", 0.25), ("gamma", 0.25)]


def test_unreadable_shard_directories_leave_the_requested_mixture_unknown(tmp_path):
    notes: list[str] = []
    rows = mixture(load_run(write_run(tmp_path / "run")), notes)
    assert rows == [("alpha", None, 0.75), ("beta", None, 0.25)]
    assert len(notes) == 1 and "/nonexistent/shards" in notes[0]


def test_per_source_validation_loss(run_dir):
    assert source_eval_losses(load_run(run_dir)) == {"alpha": [(2, 2.9), (6, 2.0)], "beta": [(2, 3.1), (6, 2.2)]}


def test_fmt_is_the_one_number_format():
    assert [fmt(None), fmt(3), fmt(1.23456), fmt(225.0, 1), fmt(float("nan")), fmt(True)] == [
        "none",
        "3",
        "1.2346",
        "225.0",
        "nan",
        "yes",
    ]

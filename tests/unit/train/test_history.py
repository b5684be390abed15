"""history.jsonl as a run stands: a resume at step S discards the lines of later steps written before it."""

from __future__ import annotations

import json

from xlam_hpc.stream.holdout import held_out
from xlam_hpc.train.history import HISTORY, read_history


def test_read_history_follows_resumes(tmp_path):
    lines = [
        {"kind": "start", "step": 0},
        *({"kind": "train", "step": s, "loss": 10.0 + s} for s in (1, 2, 3, 4)),
        {"kind": "eval", "step": 4, "loss": 9.0},
        # killed at step 4 without a save; the newest checkpoint was step 2
        {"kind": "start", "step": 2},
        {"kind": "train", "step": 3, "loss": 3.0},
        {"kind": "stop", "step": 3, "signal": "SIGTERM"},
        {"kind": "start", "step": 3},
        {"kind": "train", "step": 4, "loss": 4.0},
    ]
    (tmp_path / HISTORY).write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"kind": "train", "st')
    got = [(r["kind"], r["step"], r.get("loss")) for r in read_history(tmp_path)]
    assert got == [
        ("start", 0, None),
        ("train", 1, 11.0),
        ("train", 2, 12.0),
        ("start", 2, None),
        ("train", 3, 3.0),
        ("stop", 3, None),
        ("start", 3, None),
        ("train", 4, 4.0),
    ]
    assert read_history(tmp_path / "nothing-here") == []


def test_held_out_is_a_pure_function_of_id_fraction_and_seed():
    ids = [f"traj-{i}" for i in range(20000)]
    picked = [t for t in ids if held_out(t, 0.1, 0)]
    assert 0.09 < len(picked) / len(ids) < 0.11
    assert picked == [t for t in ids if held_out(t, 0.1, 0)]
    assert picked != [t for t in ids if held_out(t, 0.1, 1)]
    assert set(picked) <= {t for t in ids if held_out(t, 0.2, 0)}  # a larger fraction keeps the smaller split
    assert not any(held_out(t, 0.0, 0) for t in ids)


def test_a_torn_line_does_not_swallow_the_next_process_start(tmp_path):
    """A process killed mid-write leaves half a line; the next one must start on a line of its own."""
    from xlam_hpc.train.history import History

    (tmp_path / HISTORY).write_text(json.dumps({"kind": "start", "step": 0}) + '\n{"kind": "train", "step": 1, "lo')
    writer = History(tmp_path, enabled=True, step=0, restart=1, report_to=())
    writer.train(1, {"loss": 2.5, "lr": 0.1, "tokens_per_s": 1.0, "samples_by_source": {"a": 4}})
    writer.close()
    notes: list[str] = []
    got = [(r["kind"], r["step"], r.get("restart")) for r in read_history(tmp_path, notes)]
    assert got == [("start", 0, None), ("start", 0, 1), ("train", 1, 1)]
    assert len(notes) == 1 and f"{HISTORY}:2: not a history line" in notes[0]

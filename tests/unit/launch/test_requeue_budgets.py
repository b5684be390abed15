"""Requeue budgets for long runs: failures and preemptions count since the last progress (a newer
checkpoint), timeouts are a total; old ledgers load; `xlam-hpc status` shows what is left.

Every start of a Slurm job is counted too (note_start): restarts Slurm made on its own, with the
environment Slurm gives a batch script (SLURM_JOB_ID, SLURM_RESTART_COUNT).

Checkpoints are written by the real CheckpointManager; no Slurm (its queries are stubbed out).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xlam_hpc import cli
from xlam_hpc.launch import status as status_mod
from xlam_hpc.launch.requeue import _main as requeue_main
from xlam_hpc.launch.requeue import (
    budgets_now,
    decide,
    ledger_path,
    newest_checkpoint,
    note_start,
    read_ledger,
    record_stop,
)
from xlam_hpc.launch.status import run_status
from xlam_hpc.runenv.stops import stop_path
from xlam_hpc.train.checkpoint import CheckpointManager, Collectives


def _save(out: Path, step: int) -> None:
    def write(tmp: Path) -> None:
        (tmp / "model.pt").write_bytes(bytes([step % 256]) * 8)

    CheckpointManager(out, Collectives(), keep_last=2, fingerprint="fp").save(step, write)


def _fail(out: Path, max_failures: int = 1) -> str:
    return decide(out, 137, max_timeouts=10, max_preemptions=10, max_failures=max_failures).action


@pytest.fixture
def no_slurm(monkeypatch):
    monkeypatch.setattr(status_mod, "_run", lambda cmd: None)


def test_failures_far_apart_with_a_checkpoint_in_between_requeue_every_time(tmp_path):
    """A week-long run: a node failure now and then, progress in between. No time window is involved."""
    _save(tmp_path, 100)
    assert _fail(tmp_path) == "requeue"
    for step in (200, 300, 400):
        _save(tmp_path, step)  # the requeued job resumed and checkpointed
        assert _fail(tmp_path) == "requeue"
    ledger = read_ledger(tmp_path)
    assert ledger["failures"] == 4  # the total is still kept
    assert ledger["budgets"]["failures"] == {"used": 1, "checkpoint": 400, "time": ledger["history"][-1]["time"]}
    assert [h["checkpoint"] for h in ledger["history"]] == [100, 200, 300, 400]


def test_failures_in_a_row_without_progress_stop(tmp_path):
    _save(tmp_path, 100)
    assert _fail(tmp_path) == "requeue"
    d = decide(tmp_path, 1, max_timeouts=10, max_preemptions=10, max_failures=1)
    assert (d.action, d.reason, d.counts["failures"]) == ("stop", "failure", 2)
    assert _fail(tmp_path, max_failures=2) == "stop"  # still no newer checkpoint: 3 in a row


def test_failures_before_the_first_checkpoint_count_until_one_exists(tmp_path):
    assert [_fail(tmp_path, max_failures=2) for _ in range(2)] == ["requeue", "requeue"]
    _save(tmp_path, 50)
    assert _fail(tmp_path, max_failures=2) == "requeue"
    assert read_ledger(tmp_path)["budgets"]["failures"]["used"] == 1


def test_preemptions_reset_on_progress_timeouts_do_not(tmp_path):
    kwargs = {"max_timeouts": 2, "max_preemptions": 1, "max_failures": 1}
    actions = []
    for step in (10, 20, 30):  # each stop saved a checkpoint on its way out
        _save(tmp_path, step)
        record_stop(tmp_path, "SIGTERM", step)
        actions.append(decide(tmp_path, 75, **kwargs).action)
    assert actions == ["requeue"] * 3
    record_stop(tmp_path, "SIGTERM", 30)  # preempted again before a new checkpoint
    assert decide(tmp_path, 143, **kwargs).action == "stop"
    actions = []
    for step in (40, 50, 60):
        _save(tmp_path, step)
        record_stop(tmp_path, "SIGUSR1", step)
        actions.append(decide(tmp_path, 75, **kwargs).line())
    # a total: max_timeouts caps the allocations a run may use, progress or not
    assert actions == [
        "requeue timeout failures=0 preemptions=0 timeouts=1",
        "requeue timeout failures=0 preemptions=0 timeouts=2",
        "stop timeout failures=0 preemptions=0 timeouts=3",
    ]


def test_a_timeout_between_two_failures_is_progress(tmp_path):
    _save(tmp_path, 100)
    assert _fail(tmp_path) == "requeue"
    _save(tmp_path, 180)  # resumed, then the time limit came: its stop saved checkpoint-180
    record_stop(tmp_path, "SIGUSR1", 180)
    assert decide(tmp_path, 75, max_timeouts=10, max_preemptions=10, max_failures=1).action == "requeue"
    assert _fail(tmp_path) == "requeue"


def _old_ledger(out: Path, failure_time: float) -> None:
    """A ledger written before budgets existed: totals and history only."""
    ledger_path(out).parent.mkdir(parents=True, exist_ok=True)
    history = [{"time": failure_time, "job_id": "1", "exit_code": 137, "reason": "failure", "action": "requeue"}]
    old = {"timeouts": 2, "preemptions": 0, "failures": 1, "history": history}
    ledger_path(out).write_text(json.dumps(old))


def test_an_old_ledger_loads_and_progress_is_judged_by_checkpoint_time(tmp_path):
    _save(tmp_path, 100)
    created = newest_checkpoint(tmp_path)["created"]
    _old_ledger(tmp_path, failure_time=created - 60)  # the checkpoint came after the failure
    ledger = read_ledger(tmp_path)
    assert (ledger["timeouts"], ledger["failures"]) == (2, 1)
    assert ledger["budgets"]["timeouts"]["used"] == 2 and ledger["budgets"]["failures"]["used"] == 1
    assert budgets_now(tmp_path)["failures"] == {"used": 0, "since": None}
    assert _fail(tmp_path) == "requeue"

    other = tmp_path / "other"
    _save(other, 100)
    _old_ledger(other, failure_time=newest_checkpoint(other)["created"] + 60)  # failed after it: no progress
    assert _fail(other) == "stop"


def test_newest_checkpoint_ignores_partial_and_foreign_folders(tmp_path):
    assert newest_checkpoint(tmp_path / "missing") is None
    _save(tmp_path, 7)
    (tmp_path / "checkpoint-9.tmp").mkdir()  # an interrupted save
    (tmp_path / "checkpoint-12").mkdir()  # no manifest
    (tmp_path / "checkpoint-x").mkdir()
    assert newest_checkpoint(tmp_path) == newest_checkpoint(tmp_path) | {"name": "checkpoint-7", "step": 7}


def _submitted(out: Path) -> None:
    (out / "launch").mkdir(parents=True, exist_ok=True)
    (out / "launch" / "submissions.jsonl").write_text(json.dumps({"job_id": "5", "cluster": "local"}) + "\n")


def test_status_shows_the_budgets_left(tmp_path, capsys, no_slurm):
    out = tmp_path / "run"
    _submitted(out)
    _save(out, 400)
    for step in (200, 400):  # two time limits, each with its checkpoint
        record_stop(out, "SIGUSR2", step)
        decide(out, 75, max_timeouts=10, max_preemptions=10, max_failures=2)
    decide(out, 137, max_timeouts=10, max_preemptions=10, max_failures=2)
    s = run_status(out)
    assert s["budget_line"] == "failures 1/2 since checkpoint-400, timeouts 2/10, preemptions 0/10"
    assert s["budgets"]["failures"] == {"used": 1, "since": 400, "limit": 2}
    assert s["requeues"] == {"timeouts": 2, "preemptions": 0, "failures": 1}  # totals
    assert cli.main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["budget_line"] == s["budget_line"]

    _save(out, 450)  # the requeued job is progressing: the next failure starts a new count
    assert run_status(out)["budget_line"] == "failures 0/2, timeouts 2/10, preemptions 0/10"


def test_status_before_any_decision_uses_the_recipes_limits(tmp_path, no_slurm):
    out = tmp_path / "run"
    _submitted(out)
    assert run_status(out)["budget_line"] == "failures 0/2, timeouts 0/10, preemptions 0/10"  # the defaults
    (out / "config.yaml").write_text(yaml.safe_dump({"launch": {"max_failures": 5, "max_timeouts": 30}}))
    assert run_status(out)["budget_line"] == "failures 0/5, timeouts 0/30, preemptions 0/10"
    decide(out, 1, max_timeouts=3, max_preemptions=3, max_failures=3)  # the last decision's limits win
    assert run_status(out)["budget_line"] == "failures 1/3 without a checkpoint, timeouts 0/3, preemptions 0/3"


# --- every restart is counted at the job's start (issue 13) -----------------------------------------------------

LIMITS = {"max_timeouts": 10, "max_preemptions": 10, "max_failures": 2}


def _in_job(monkeypatch, job: str, restart: int | None) -> None:
    """The environment Slurm gives the batch script of job `job`, run `restart` (unset in the first run)."""
    monkeypatch.setenv("SLURM_JOB_ID", job)
    if restart is None:
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    else:
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restart))


def test_a_restart_no_decision_asked_for_is_counted_at_the_next_start(tmp_path, monkeypatch):
    """`scontrol requeue` (or a batch shell killed before deciding): the ranks saved, nobody decided; the
    next start counts it from SLURM_RESTART_COUNT and the recorded stop, once."""
    _save(tmp_path, 10)
    _in_job(monkeypatch, "41", None)
    assert note_start(tmp_path, **LIMITS).line().startswith("start start")
    record_stop(tmp_path, "SIGTERM", 12)  # the ranks saved at step 12; the job was requeued by Slurm
    _in_job(monkeypatch, "41", 1)
    d = note_start(tmp_path, **LIMITS)
    assert (d.action, d.reason, d.counts["preemptions"]) == ("start", "preemption", 1)
    ledger = read_ledger(tmp_path)
    assert ledger["preemptions"] == 1 and not stop_path(tmp_path).exists()
    entry = ledger["history"][-1]
    assert (entry["job_id"], entry["restart"], entry["by"], entry["saved"], entry["step"]) == (
        "41",
        0,
        "slurm",
        True,
        12,
    )
    note_start(tmp_path, **LIMITS)  # the same start again (a retried batch line): nothing more
    assert read_ledger(tmp_path)["preemptions"] == 1


def test_a_restart_the_batch_script_decided_is_not_counted_twice(tmp_path, monkeypatch):
    _in_job(monkeypatch, "42", None)
    note_start(tmp_path, **LIMITS)
    record_stop(tmp_path, "SIGUSR2", 5)
    assert decide(tmp_path, 75, **LIMITS).action == "requeue"
    _in_job(monkeypatch, "42", 1)
    note_start(tmp_path, **LIMITS)
    ledger = read_ledger(tmp_path)
    assert (ledger["timeouts"], ledger["preemptions"]) == (1, 0)
    assert [(h["reason"], h["restart"]) for h in ledger["history"]] == [("timeout", 0)]


def test_restarts_without_a_stop_and_gaps_are_preemptions_and_use_up_the_budget(tmp_path, monkeypatch):
    """Restarts 1-3 of a job none of whose runs decided anything (killed before saving, no progress): three
    preemptions; with max_preemptions=2 the start says stop, and the batch script does not start the ranks."""
    _in_job(monkeypatch, "43", 3)
    d = note_start(tmp_path, max_timeouts=10, max_preemptions=2, max_failures=2)
    assert (d.action, d.reason, d.counts["preemptions"]) == ("stop", "preemption", 3)
    history = read_ledger(tmp_path)["history"]
    assert [(h["restart"], h["action"]) for h in history] == [(0, "requeue"), (1, "requeue"), (2, "stop")]


def test_a_term_to_the_whole_job_is_a_preemption_even_when_the_ranks_could_not_save(tmp_path, monkeypatch):
    """`scancel --signal=TERM --full`: srun SIGKILLs the ranks (137, no stop recorded); the batch shell's trap
    left launch/batch_signal, so the exit is a preemption, not a failure."""
    _in_job(monkeypatch, "44", None)
    (tmp_path / "launch").mkdir(parents=True)
    (tmp_path / "launch" / "batch_signal").write_text("1700000000\n")
    d = decide(tmp_path, 137, **LIMITS)
    assert (d.action, d.reason) == ("requeue", "preemption")
    entry = read_ledger(tmp_path)["history"][-1]
    assert (entry["signal"], entry["saved"], entry["job_id"], entry["restart"]) == ("SIGTERM", False, "44", 0)
    assert not (tmp_path / "launch" / "batch_signal").exists()
    assert decide(tmp_path, 137, **LIMITS).reason == "failure"  # counted once: the next 137 is a failure


def test_a_resubmission_adds_to_the_totals_and_clears_the_old_jobs_stop(tmp_path, monkeypatch):
    _in_job(monkeypatch, "50", 2)  # job 50 was requeued twice by Slurm
    note_start(tmp_path, **LIMITS)
    record_stop(tmp_path, "SIGTERM", 7)  # job 50 saved and ended without a decision (killed)
    _in_job(monkeypatch, "51", None)  # the user resubmits: a new job id for the same output_dir
    d = note_start(tmp_path, **LIMITS)
    assert d.action == "start" and not stop_path(tmp_path).exists()
    ledger = read_ledger(tmp_path)
    assert ledger["preemptions"] == 2 and ledger["history"][-1]["reason"] == "resubmitted"
    assert ledger["starts"] == {"50": 2, "51": 0}


def test_the_start_command_prints_the_line_the_batch_script_reads(tmp_path, monkeypatch, capsys):
    _in_job(monkeypatch, "60", 1)
    assert requeue_main(["start", str(tmp_path), "--max-preemptions", "0"]) == 0
    assert capsys.readouterr().out.startswith("stop preemption ")

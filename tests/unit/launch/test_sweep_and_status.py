"""Sweep grids and seeds, `xlam-hpc status` from the files a run leaves, and the requeue decision.

No Slurm and no training: run directories are fabricated (FINISHED marker, launch/submissions.jsonl,
ledger, checkpoints written by the real CheckpointManager); Slurm queries are stubbed out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xlam_hpc import cli
from xlam_hpc.errors import ConfigError
from xlam_hpc.launch import status as status_mod
from xlam_hpc.launch import sweep as sweep_mod
from xlam_hpc.launch.requeue import decide, ledger_path, record_stop
from xlam_hpc.launch.status import run_status, status_report
from xlam_hpc.launch.sweep import expand_grid, parse_grid, task_seed
from xlam_hpc.train.checkpoint import CheckpointManager, Collectives

# --- grids ---------------------------------------------------------------------------------------


def test_parse_grid_values_are_typed_yaml_scalars():
    grid = parse_grid(["lr=1e-5,2e-5", "train.lora.r=8,16", "train.schedule=cosine,constant", "seed=3"])
    assert grid == {
        "lr": [1e-5, 2e-5],
        "train.lora.r": [8, 16],
        "train.schedule": ["cosine", "constant"],
        "seed": [3],
    }
    assert all(isinstance(v, float) for v in grid["lr"]) and all(isinstance(v, int) for v in grid["train.lora.r"])
    assert parse_grid([" lr = 1e-3 , 2e-3 "]) == {"lr": [1e-3, 2e-3]}  # spaces around keys and values


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lr", "is not of the form key=v1,v2"),
        ("=1,2", "is not of the form key=v1,v2"),
        ("lr=", "is not of the form key=v1,v2"),
        ("lr=  ", "is not of the form key=v1,v2"),
        ("lr=,", "has no values"),
        ("lr= , ,", "has no values"),
    ],
)
def test_parse_grid_rejects_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid([spec])


def _recipe(tmp_path: Path, **extra) -> Path:
    data = {
        "seed": 7,
        "output_dir": str(tmp_path / "sweep"),
        "data": {"shards": [str(tmp_path / "shards")], "global_batch_size": 2},
        "model": {"name_or_path": "tiny-mistral"},
        "train": {"max_steps": 3, "lora": {"r": 8}},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_expand_grid_gives_every_point_its_dir_and_values_and_the_recipes_seed(tmp_path):
    recipe = _recipe(tmp_path)
    grid = parse_grid(["lr=1e-3,2e-3", "train.lora.r=4,8"])
    tasks = expand_grid(str(recipe), [], grid, tmp_path / "sweep")
    assert [a for a, _ in tasks] == [
        {"train.lr": 1e-3, "train.lora.r": 4},
        {"train.lr": 1e-3, "train.lora.r": 8},
        {"train.lr": 2e-3, "train.lora.r": 4},
        {"train.lr": 2e-3, "train.lora.r": 8},
    ]
    for i, (assignment, r) in enumerate(tasks):
        assert (r.train.lr, r.train.lora.r) == (assignment["train.lr"], assignment["train.lora.r"])
        assert r.output_dir == str(tmp_path / "sweep" / f"task-{i:04d}")
    # only the grid varies: every task has the recipe's seed (same data order, same initial weights)
    assert [r.seed for _, r in tasks] == [7, 7, 7, 7]


def test_seeds_adds_replicates_of_every_point(tmp_path):
    tasks = expand_grid(str(_recipe(tmp_path)), [], parse_grid(["lr=1e-3,2e-3"]), tmp_path / "sweep", seeds=3)
    assert [(a["train.lr"], r.seed) for a, r in tasks] == [
        (1e-3, 7), (1e-3, 8), (1e-3, 9), (2e-3, 7), (2e-3, 8), (2e-3, 9)
    ]  # fmt: skip
    assert [r.output_dir for _, r in tasks] == [str(tmp_path / "sweep" / f"task-{i:04d}") for i in range(6)]
    with pytest.raises(ConfigError, match="--seeds must be >= 1"):
        expand_grid(str(_recipe(tmp_path)), [], parse_grid(["lr=1e-3"]), tmp_path / "sweep", seeds=0)
    with pytest.raises(ConfigError, match=r"--grid seed=\.\.\. and --seeds K both set the seed"):
        expand_grid(str(_recipe(tmp_path)), [], parse_grid(["seed=1,2"]), tmp_path / "sweep", seeds=2)
    grid_seeds = expand_grid(str(_recipe(tmp_path)), [], parse_grid(["seed=1,2"]), tmp_path / "sweep")
    assert [r.seed for _, r in grid_seeds] == [1, 2]  # a seed axis of the grid is kept as given


def test_a_key_given_twice_in_the_grid_is_an_error():
    with pytest.raises(ConfigError, match=r"--grid gives train.lr twice \('lr=1,2' and 'train.lr=3'\)"):
        parse_grid(["lr=1,2", "train.lr=3"])


@pytest.fixture
def real_recipe(tmp_path, shard_dir):
    from tests.conftest import write_recipe

    return write_recipe(tmp_path / "r.yaml", shard_dir / "alpha", output_dir=str(tmp_path / "sweep"))


def _task_table(err: str) -> list[str]:
    line = next(x for x in err.splitlines() if " tasks: " in x)
    return line.split(" tasks: ", 1)[1].split("; ")


def test_repeated_grid_flags_combine_and_the_table_shows_the_seed(real_recipe, tmp_path, capsys):
    argv = ["sweep", str(real_recipe), "--grid", "lr=1e-5,2e-5", "--grid", "train.lora.r=8,16", "--dry-run"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert _task_table(err) == [
        "task-0000 train.lr=1e-05 train.lora.r=8 seed=7",
        "task-0001 train.lr=1e-05 train.lora.r=16 seed=7",
        "task-0002 train.lr=2e-05 train.lora.r=8 seed=7",
        "task-0003 train.lr=2e-05 train.lora.r=16 seed=7",
    ]
    assert "preflight ok: 4 tasks, nothing submitted" in err and not (tmp_path / "sweep").exists()
    assert cli.main([*argv, "--seeds", "2"]) == 0
    table = _task_table(capsys.readouterr().err)
    assert len(table) == 8 and table[:2] == [
        "task-0000 train.lr=1e-05 train.lora.r=8 seed=7",
        "task-0001 train.lr=1e-05 train.lora.r=8 seed=8",
    ]


def test_overrides_anywhere_on_the_sweep_line(real_recipe, tmp_path, capsys):
    """KEY=VALUE words before and after the options: all applied, later ones win."""
    argv = ["sweep", str(real_recipe), "train.max_steps=5", "--grid", "lr=1e-5,2e-5", "--dry-run", "seed=11"]
    assert cli.main([*argv, "train.max_steps=6", "--sweep-dir", str(tmp_path / "s"), "train.warmup_steps=1"]) == 0
    assert _task_table(capsys.readouterr().err) == [
        "task-0000 train.lr=1e-05 seed=11",
        "task-0001 train.lr=2e-05 seed=11",
    ]
    tasks = expand_grid(str(real_recipe), ["train.max_steps=5", "train.max_steps=6"], {"lr": [1e-5]}, tmp_path / "s")
    assert tasks[0][1].train.max_steps == 6


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("train.lrr", "Did you mean 'lr'?"),
        ("trian.lr", "Did you mean 'train'?"),
        ("train.lora.alpah", "Did you mean 'alpha'?"),
    ],
)
def test_grid_key_that_is_not_a_recipe_field_fails_before_anything_is_submitted(
    tmp_path, monkeypatch, capsys, key, hint
):
    submitted = []
    monkeypatch.setattr(sweep_mod, "submit_sweep", lambda *a, **k: submitted.append(a))
    code = cli.main(["sweep", str(_recipe(tmp_path)), "--grid", f"{key}=1,2", "--cluster", "slurm"])
    err = capsys.readouterr().err
    assert code != 0 and not submitted
    assert "xlam-hpc sweep: error: unknown key" in err and hint in err, err
    assert not (tmp_path / "sweep" / "sweep.json").exists()


def test_a_grid_with_zero_points_fails(tmp_path):
    recipe = str(_recipe(tmp_path))
    with pytest.raises(ConfigError, match="0 points"):
        expand_grid(recipe, [], {"train.lr": []}, tmp_path / "sweep")
    with pytest.raises(ConfigError, match="at least one --grid"):
        expand_grid(recipe, [], {}, tmp_path / "sweep")


def test_task_seed_is_stable_and_distinct():
    # stable: the same values in every process, Python and numpy version (SeedSequence's hash is fixed)
    assert [task_seed(7, i) for i in range(4)] == [2083679832, 369571992, 1009178997, 3466196061]
    assert task_seed(7, 2) == task_seed(7, 2)
    seeds = [task_seed(7, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**32 for s in seeds)
    assert {task_seed(8, i) for i in range(1000)}.isdisjoint(seeds)  # another base seed, other streams
    assert task_seed(0, 1) != task_seed(1, 0)


# --- status ---------------------------------------------------------------------------------------


@pytest.fixture
def no_slurm(monkeypatch):
    """squeue/scontrol unavailable (or the job long forgotten): status comes from the files alone."""
    monkeypatch.setattr(status_mod, "_run", lambda cmd: None)


def test_status_of_a_directory_without_launch_info_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(ConfigError, match="neither a run output_dir nor a sweep directory"):
        status_report(tmp_path)
    assert cli.main(["status", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err == f"xlam-hpc status: error: {tmp_path} is neither a run output_dir nor a sweep directory"
    assert cli.main(["status", str(tmp_path / "missing")]) != 0
    assert "is neither a run output_dir nor a sweep directory" in capsys.readouterr().err


def _writer(payload: bytes):
    def write(tmp: Path) -> None:
        (tmp / "ds").mkdir()
        (tmp / "ds" / "model.pt").write_bytes(payload)
        (tmp / "loader-rank0.json").write_text('{"samples_consumed": 1}')

    return write


def _finished_run(out: Path, *, cluster: str = "local") -> Path:
    """What a local run with one time-limit requeue leaves behind."""
    manager = CheckpointManager(out, Collectives(), keep_last=3, fingerprint="fp")
    for step in (4, 8):
        manager.save(step, _writer(bytes([step]) * 16))
    (out / "FINISHED").write_text(json.dumps({"step": 8, "fingerprint": "fp"}) + "\n")
    (out / "metrics.json").write_text(json.dumps({"step": 8, "final_loss": 1.25}) + "\n")
    rows = [
        {"job_id": "101", "cluster": cluster, "submitted": 1.0, "logs": str(out / "launch" / "submitit" / "101")},
        {"job_id": "102", "cluster": cluster, "submitted": 2.0, "logs": str(out / "launch" / "submitit" / "102")},
    ]
    (out / "launch").mkdir(parents=True, exist_ok=True)
    (out / "launch" / "submissions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record_stop(out, "SIGUSR1", 4)
    decide(out, 75, max_timeouts=3, max_preemptions=3, max_failures=1, job_id="101")
    decide(out, 0, max_timeouts=3, max_preemptions=3, max_failures=1, job_id="102")
    return out


def test_status_of_a_finished_local_run(tmp_path, capsys, no_slurm):
    out = _finished_run(tmp_path / "run")
    s = run_status(out)
    assert s["state"] == "FINISHED" and s["finished"] is True
    assert s["job_id"] == "102" and s["cluster"] == "local"
    assert s["restarts"] == 1  # two decisions in the ledger, one of them a requeue: one restart
    assert s["requeues"] == {"timeouts": 1, "preemptions": 0, "failures": 0}
    assert s["last_checkpoint_step"] == 8 and s["final_loss"] == 1.25
    assert s["logs"] == str(out / "launch" / "submitit" / "102")
    assert cli.main(["status", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("FINISHED") and "job 102 " in line and "checkpoint 8 " in line and "loss 1.25" in line
    assert cli.main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["last_checkpoint_step"] == 8


def test_status_skips_a_damaged_last_checkpoint(tmp_path, no_slurm):
    out = _finished_run(tmp_path / "run")
    (out / "checkpoint-8" / "ds" / "model.pt").write_bytes(b"short")  # truncated: wrong size
    assert run_status(out)["last_checkpoint_step"] == 4


def test_status_of_a_slurm_run_slurm_has_forgotten_comes_from_the_files(tmp_path, no_slurm):
    out = _finished_run(tmp_path / "run", cluster="slurm")
    s = run_status(out)
    assert (s["state"], s["job_id"], s["restarts"]) == ("FINISHED", "102", 1)


def test_status_reports_a_run_that_gave_up(tmp_path, no_slurm):
    out = tmp_path / "run"
    (out / "launch").mkdir(parents=True)
    (out / "launch" / "submissions.jsonl").write_text(json.dumps({"job_id": "7", "cluster": "local"}) + "\n")
    for _ in range(2):
        decide(out, 137, max_timeouts=3, max_preemptions=3, max_failures=1)
    s = run_status(out)
    assert s["state"] == "GAVE_UP (failure)" and s["requeues"]["failures"] == 2 and s["last_checkpoint_step"] is None


def test_status_of_a_sweep_directory_lists_every_task(tmp_path, capsys, no_slurm):
    sweep = tmp_path / "sweep"
    tasks = []
    for i in range(2):
        out = _finished_run(sweep / f"task-{i:04d}")
        tasks.append(
            {"index": i, "assignment": {"train.lr": 0.1 * (i + 1)}, "seed": task_seed(7, i), "output_dir": str(out)}
        )
    (sweep / "sweep.json").write_text(json.dumps({"cluster": "local", "array_job_id": "1", "tasks": tasks}))
    assert [r["task"] for r in status_report(sweep)] == [0, 1]
    assert cli.main(["status", str(sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split()[:3] for x in lines[:2]] == [["task", "0", "FINISHED"], ["task", "1", "FINISHED"]]
    assert (sweep / "summary.csv").read_text().splitlines()[1].startswith("0,0.1,2083679832,FINISHED,8,1.25")


# --- requeue decision ------------------------------------------------------------------------------

BUDGETS = {"max_timeouts": 2, "max_preemptions": 2, "max_failures": 1}


def test_exit_0_is_done(tmp_path):
    d = decide(tmp_path, 0, **BUDGETS)
    assert (d.action, d.reason, d.counts) == ("done", "finished", {"timeouts": 0, "preemptions": 0, "failures": 0})
    assert d.line() == "done finished failures=0 preemptions=0 timeouts=0"


@pytest.mark.parametrize("signal_name", ["SIGUSR2", "SIGUSR1"])
def test_exit_75_after_a_time_limit_signal_is_a_timeout(tmp_path, signal_name):
    record_stop(tmp_path, signal_name, 12)
    d = decide(tmp_path, 75, **BUDGETS, job_id="42")
    assert (d.action, d.reason, d.counts["timeouts"]) == ("requeue", "timeout", 1)
    entry = json.loads(ledger_path(tmp_path).read_text())["history"][-1]
    assert entry == entry | {"job_id": "42", "exit_code": 75, "reason": "timeout", "signal": signal_name, "step": 12}
    assert not (tmp_path / "launch" / "last_stop.json").exists()  # a stop is counted once


@pytest.mark.parametrize("code", [143, 75])
def test_exit_after_sigterm_is_a_preemption(tmp_path, code):
    """srun itself may report 128+SIGTERM when Slurm signals it too; the recorded stop decides."""
    record_stop(tmp_path, "SIGTERM", 5)
    d = decide(tmp_path, code, **BUDGETS)
    assert (d.action, d.reason, d.counts) == ("requeue", "preemption", {"timeouts": 0, "preemptions": 1, "failures": 0})


def test_sigkill_without_a_recorded_stop_is_a_failure(tmp_path):
    d = decide(tmp_path, 137, **BUDGETS)
    assert (d.action, d.reason, d.counts["failures"]) == ("requeue", "failure", 1)


def test_exhausted_budgets_stop(tmp_path):
    assert decide(tmp_path, 137, **BUDGETS).action == "requeue"
    d = decide(tmp_path, 1, **BUDGETS)
    assert (d.action, d.reason, d.counts["failures"]) == ("stop", "failure", 2)
    for expected in ("requeue", "requeue", "stop"):  # timeouts have their own budget
        record_stop(tmp_path, "SIGUSR2", 3)
        assert decide(tmp_path, 75, **BUDGETS).action == expected
    record_stop(tmp_path, "SIGTERM", 3)
    assert decide(tmp_path, 75, **BUDGETS).line() == "requeue preemption failures=2 preemptions=1 timeouts=3"
    assert [h["action"] for h in json.loads(ledger_path(tmp_path).read_text())["history"]] == [
        "requeue",
        "stop",
        "requeue",
        "requeue",
        "stop",
        "requeue",
    ]


def test_requeue_decision_command_prints_the_decision(tmp_path, capsys):
    record_stop(tmp_path, "SIGUSR2", 9)
    args = ["requeue-decision", str(tmp_path), "--exit-code", "75", "--max-timeouts", "0"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out == "stop timeout failures=0 preemptions=0 timeouts=1\n"
    assert cli.main(["requeue-decision", str(tmp_path), "--exit-code", "0"]) == 0
    assert capsys.readouterr().out.startswith("done finished ")

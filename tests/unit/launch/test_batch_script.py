"""The batch script `submit --cluster slurm` queues (rendered as submitit renders it), and why a failed
job failed (launch/causes.py, shown by `xlam-hpc status`).

The script's shell is checked with bash itself: every value is quoted, the setup lines run before srun,
and the TERM trap / srun wrapper behave as the batch shell needs (a stand-in `srun` on PATH plays the
step: it is a bash test of the script's own lines). The real-cluster runs are in tests/cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from xlam_hpc import cli
from xlam_hpc.errors import ConfigError
from xlam_hpc.launch import status as status_mod
from xlam_hpc.launch.causes import failure_cause
from xlam_hpc.launch.config import LaunchConfig
from xlam_hpc.launch.requeue import decide
from xlam_hpc.launch.slurm import batch_setup, sbatch_script
from xlam_hpc.launch.status import run_status

HOSTILE = "/tmp/a b;touch x'q\"$(touch y)`touch z`"


@pytest.fixture
def no_slurm(monkeypatch):
    monkeypatch.setattr(status_mod, "_run", lambda cmd: None)


def _bash_words(line: str) -> list[str]:
    """How bash splits a line into words (no expansion runs: printf of the quoted words)."""
    res = subprocess.run(["bash", "-c", f"set -f; printf '%s\\0' {line}"], capture_output=True, check=True)
    return res.stdout.decode().split("\0")[:-1]


def test_every_value_in_the_script_is_quoted_and_no_wckey_is_forced():
    launch = LaunchConfig(job_name=HOSTILE, partition="low;touch p", setup=["module load apptainer"])
    script = sbatch_script(launch, HOSTILE)
    assert "--wckey" not in script
    srun = next(x for x in script.splitlines() if x.startswith("srun "))
    words = _bash_words(srun)
    assert words[-1] == f"{HOSTILE}/launch/submitit/%j"  # submitit's folder, one word
    assert words[words.index("--output") + 1] == f"{HOSTILE}/launch/submitit/%j/%j_%t_log.out"
    for line in script.splitlines():
        if line.startswith("xlam_out="):
            assert _bash_words(line.replace("xlam_out=", "", 1)) == [HOSTILE]
        if line.startswith("#SBATCH --job-name="):
            assert _bash_words(line.split("=", 1)[1]) == [HOSTILE]
        if line.startswith("#SBATCH --partition="):
            assert _bash_words(line.split("=", 1)[1]) == ["low;touch p"]
        if "requeue-decision" in line or "xlam_hpc.launch.requeue start" in line:
            assert ' "$xlam_out" ' in line  # the quoted variable, set once from the quoted path
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_an_array_task_of_a_sweep_works_in_its_own_task_directory(tmp_path):
    """A sweep's array is submitted with task 0's output_dir; task 3's start, decision and TERM note must go to
    SWEEP/task-0003 (a plain run's dir is used as given)."""
    lines = batch_setup(LaunchConfig(), str(tmp_path / "sw eep" / "task-0000"))
    first = next(i for i, x in enumerate(lines) if x.startswith("xlam_out="))
    head = "\n".join(lines[first : first + 2])  # xlam_out=... and the array task's line
    show = 'echo "$xlam_out"'
    for task, want in (("3", tmp_path / "sw eep" / "task-0003"), ("", tmp_path / "sw eep" / "task-0000")):
        env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "5", **({"SLURM_ARRAY_TASK_ID": task} if task else {})}
        res = subprocess.run(["bash", "-c", f"{head}\n{show}"], capture_output=True, text=True, env=env, check=True)
        assert res.stdout.strip() == str(want)
    assert not any("task-" in x and "SLURM_ARRAY_TASK_ID" in x for x in batch_setup(LaunchConfig(), "/r/task-7"))


def test_setup_lines_run_before_srun_and_the_apptainer_env_is_passed_both_ways():
    launch = LaunchConfig(setup=["module load apptainer", "export X=1"], container="apptainer exec img.sif")
    script = sbatch_script(launch, "/scratch/run")
    lines = script.splitlines()
    srun = next(i for i, x in enumerate(lines) if x.startswith("srun "))
    assert lines.index("module load apptainer") < lines.index("export X=1") < srun
    assert "APPTAINERENV_$v" in script and "SINGULARITYENV_$v" in script
    assert LaunchConfig(setup="module load x").setup == ["module load x"]  # one line may be given as a string


@pytest.mark.parametrize(
    ("output_dir", "setup", "message"),
    [
        ("/tmp/run-%j", [], "contains '%'"),
        ("/tmp/a\nb", [], "control character"),
        ("/tmp/ok", ["module load x\nrm -rf /"], "launch.setup line contains a control character"),
    ],
)
def test_values_the_script_cannot_carry_are_refused_before_queueing(output_dir, setup, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sbatch_script(LaunchConfig(setup=setup), output_dir)


def _term_run(tmp_path: Path, fake_step: str) -> subprocess.CompletedProcess:
    """The script's setup lines and its srun line in bash, with a stand-in `srun` (the step: `fake_step`) and
    `scancel` (passes --signal=TERM on to the step, as Slurm does), and a TERM to the batch shell 0.5 s in.
    The Python start step is left out (tested in test_requeue_budgets.py)."""
    out = tmp_path / "o d;x"
    (out / "launch").mkdir(parents=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stubs = {
        "srun": f'echo $$ >"$STEP_PID"; {fake_step}',
        "scancel": 'echo "scancel $*" >>"$LOG"; kill -TERM "$(cat "$STEP_PID")"',
    }
    for name, body in stubs.items():
        (bindir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bindir / name).chmod(0o755)
    lines = [x for x in batch_setup(LaunchConfig(), str(out)) if "xlam_start" not in x]
    script = "\n".join([*lines, "(sleep 0.5; kill -TERM $$) &", "srun step", 'echo "rc=$?"'])
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "LOG": str(tmp_path / "log"),
        "STEP_PID": str(tmp_path / "step.pid"),
        "SLURM_JOB_ID": "9",
    }
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_the_batch_shell_survives_a_term_passes_it_on_and_gets_srun_s_real_status(tmp_path):
    """TERM to the batch shell while srun runs: it notes the signal, scancels the steps with TERM (never a
    kill of srun), waits for srun, and gets srun's own exit status (75: the ranks saved)."""
    res = _term_run(tmp_path, 'trap "sleep 1; exit 75" TERM; sleep 5 & wait')
    assert "rc=75" in res.stdout, res.stdout + res.stderr
    assert "batch shell got SIGTERM" in res.stderr
    assert (tmp_path / "log").read_text().strip() == "scancel --signal=TERM 9"
    assert (tmp_path / "o d;x" / "launch" / "batch_signal").exists()


def test_a_step_killed_at_the_term_still_gives_its_own_status(tmp_path):
    """srun got the TERM too and SIGKILLed the ranks: the status is srun's 137, not the interrupted wait's."""
    res = _term_run(tmp_path, 'trap "exit 137" TERM; sleep 5 & wait')
    assert "rc=137" in res.stdout, res.stdout + res.stderr


# --- why a job failed -------------------------------------------------------------------------------------------


def _job_logs(out: Path, job: str, logs: dict[int, str]) -> Path:
    folder = out / "launch" / "submitit" / job
    folder.mkdir(parents=True)
    for rank, text in logs.items():
        (folder / f"{job}_{rank}_log.err").write_text(text)
    with (out / "launch" / "submissions.jsonl").open("a") as f:
        f.write(json.dumps({"job_id": job, "cluster": "slurm", "logs": str(folder)}) + "\n")
    return folder


START = "submitit INFO (2026-11-30 10:00:00,000) - Starting with JobEnvironment(job_id=7, hostname=n1)\n"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "x.py", line 3, in <module>\n'
    "RuntimeError: CUDA error: an illegal memory access was encountered\n"
)


def test_the_failing_rank_is_the_one_with_its_own_error_not_the_peer_that_lost_it(tmp_path):
    out = tmp_path / "run"
    folder = _job_logs(
        out,
        "7",
        {
            0: START + "RuntimeError: old error of an earlier run\n" + START + "[restart 1 rank 0] step 3/30\n"
            "RuntimeError: [gloo] Connection closed by peer [127.0.0.1]:4242\n"
            "srun: error: n2: task 1: Exited with exit code 1\n",
            1: START + "ValueError: an earlier run's\n" + START + TRACEBACK,
        },
    )
    cause = failure_cause(out)
    assert cause == {
        "rank": 1,
        "line": "RuntimeError: CUDA error: an illegal memory access was encountered",
        "log": str(folder / "7_1_log.err"),
    }


def test_a_rank_killed_without_a_word_is_named_by_srun(tmp_path):
    out = tmp_path / "run"
    folder = _job_logs(
        out,
        "8",
        # srun then kills the survivors and reports them too: the first death is the cause
        {
            0: START
            + "[restart 0 rank 0] step 4/30\nsrun: error: n2: task 1: Killed\nsrun: error: n1: task 0: Killed\n",
            1: START,
        },
    )
    assert failure_cause(out) == {
        "rank": 1,
        "line": "srun: error: n2: task 1: Killed",
        "log": str(folder / "8_1_log.err"),
    }


def test_a_template_log_with_every_rank_in_one_file(tmp_path):
    out = tmp_path / "run"
    (out / "launch").mkdir(parents=True)
    log = tmp_path / "xlam-sft-9.out"
    log.write_text(
        "[10:00:00] job 9 restart 0 on n1: r.yaml -> out\n[restart 0 rank 0] step 1/8\n"
        "[restart 0 rank 1] Traceback (most recent call last):\n[restart 0 rank 1] OSError: [Errno 28] No space left\n"
    )
    (out / "launch" / "submissions.jsonl").write_text(json.dumps({"job_id": "9", "cluster": "slurm", "logs": str(log)}))
    assert failure_cause(out) == {"rank": 1, "line": "OSError: [Errno 28] No space left", "log": str(log)}


def test_status_shows_the_cause_of_a_run_that_gave_up(tmp_path, capsys, no_slurm, monkeypatch):
    out = tmp_path / "run"
    folder = _job_logs(out, "12", {0: START + "[restart 0 rank 0] step 2/8\n", 1: START + TRACEBACK})
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    for _ in range(2):
        decide(out, 1, max_timeouts=3, max_preemptions=3, max_failures=1)
    s = run_status(out)
    assert s["state"] == "GAVE_UP (failure)"
    assert s["cause"]["line"].startswith("RuntimeError: CUDA error") and s["cause"]["log"] == str(
        folder / "12_1_log.err"
    )
    assert json.loads((out / "launch" / "ledger.json").read_text())["history"][-1]["cause"] == s["cause"]
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RuntimeError: CUDA error" in text and str(folder / "12_1_log.err") in text

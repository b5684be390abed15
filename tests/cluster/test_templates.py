"""The plain sbatch templates in slurm/ (the ones users copy and edit) on the real 2-node test cluster.

Each template is submitted as a user would, with sbatch command-line options in place of the lines a
user edits (partition, time, GPUs, memory, log file) and RECIPE/OUT/SWEEP_DIR/CONTAINER from the
environment (`--export=ALL,...,CONTAINER=`: the trainer runs on the host, from this venv). Every run
uses the tiny model and a few steps, so the whole file takes about 3.5 minutes. Interruptions: a
preemption by a `high` job (on the job's node only), USR1 to the batch shell (what
`--signal=B:USR1@300` sends before the time limit), `scontrol requeue`, and the requeue of one array
task.

The static checks at the top need no cluster; the cluster tests skip when it is down, except under
CI=true, where they fail (as in test_cluster_smoke.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import cleanenv_container, needs_cluster, require_cluster
from tests.integration.conftest import write_recipe
from xlam_hpc.launch.sweep import task_seed

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
TEMPLATES = ("sft-single-node.sbatch", "sft-multi-node.sbatch", "dpo.sbatch", "sweep-array.sbatch")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}
# What a user would edit, given on the command line instead (command-line options beat #SBATCH lines).
TEST_CLUSTER_OPTS = ["-p", "low", "--time=10", "--gpus-per-node=0", "--cpus-per-task=1", "--mem=1G"]
JOB_TIMEOUT_S = 240


# --- the templates themselves (no cluster needed) -----------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_has_the_requeue_contract(name):
    text = (SLURM_DIR / name).read_text()
    for line in (
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@300",
        'CONTAINER="${CONTAINER-apptainer exec --nv --cleanenv -B /scratch,/data $HOME/xlam-hpc.sif}"',
        "srun --kill-on-bad-exit=1 ",
        'kill -USR1 "$srun_pid"',
        'xlam-hpc requeue-decision "$OUT" --exit-code "$rc"',
        # issue 13: the env reaches apptainer and singularity; every start is counted; a TERM is noted
        'export "APPTAINERENV_$v=${!v}" "SINGULARITYENV_$v=${!v}"',
        'python3 -m xlam_hpc.launch.requeue start "$OUT"',
        'date +%s >"$OUT/launch/batch_signal"',
    ):
        assert line in text, f"{name}: missing {line!r}"
    # an array task must name itself JOBID_TASK: the bare id of one task is the whole array's id
    job = '"$JOB"' if name == "sweep-array.sbatch" else '"$SLURM_JOB_ID"'
    assert f"scontrol requeue {job}" in text and f"scancel --signal=TERM {job}" in text
    if name == "sweep-array.sbatch":
        assert 'JOB="${SLURM_ARRAY_JOB_ID}_$TASK"' in text and '$SLURM_JOB_ID"' not in text
    assert "kill -TERM" not in text.replace("Never `kill -TERM` srun", ""), "srun turns SIGTERM into SIGKILL"
    for option in ("--partition=", "--account=", "--time=", "--ntasks-per-node=", "--gpus-per-node=", "--output="):
        line = next(x for x in text.splitlines() if x.startswith(f"#SBATCH {option}"))
        assert "# CHANGE:" in line, f"{name}: {line!r} needs a '# CHANGE:' comment"
    assert re.search(r'^RECIPE="\$\{RECIPE:-.*# CHANGE:', text, re.M)
    assert re.search(r'^(OUT|SWEEP_DIR)="\$\{(OUT|SWEEP_DIR):-.*# CHANGE:', text, re.M)
    assert re.search(r"^CONTAINER=.*# CHANGE:", text, re.M)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_is_shellcheck_clean(name):
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":  # .ci/test-services.sh installs it
            pytest.fail("shellcheck not installed under CI=true")
        pytest.skip("shellcheck not installed (apt-get install shellcheck; `make test` does)")
    res = subprocess.run(["shellcheck", str(SLURM_DIR / name)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# --- cluster ---------------------------------------------------------------------------------------


def _job_env() -> dict[str, str]:
    """The submitting environment: this venv's xlam-hpc and python3 first on PATH (sbatch exports it)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    return env


def _sbatch(template: str, log: str, *opts: str, export: dict[str, str], args: tuple[str, ...] = ()) -> str:
    """sbatch --export=ALL,RECIPE=...,OUT=...,CONTAINER= as a user would; a value with a comma (a
    container prefix with `-B /a,/b`) cannot go through --export, which splits on commas: such a
    value reaches the job through the submitting environment (ALL) instead."""
    exports = ",".join(["ALL", *(f"{k}={v}" for k, v in export.items() if "," not in v)])
    cmd = ["sbatch", "--parsable", f"--export={exports}", *TEST_CLUSTER_OPTS, "-o", log, *opts]
    res = subprocess.run(
        [*cmd, str(SLURM_DIR / template), *args],
        capture_output=True,
        text=True,
        env={**_job_env(), **export},
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, f"sbatch refused {template}: {res.stderr}"
    return res.stdout.strip().split(";")[0]


def _states(job: str) -> dict[str, str]:
    """{job or array task id: state} from squeue (there is no sacct on this cluster)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job, "-o", "%i %T"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _wait(job: str, done, log_text, timeout: float = JOB_TIMEOUT_S) -> dict[str, str]:
    """Until `done(states)`; a job that ends otherwise (FAILED, ...) fails at once with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _states(job)
        if done(states):
            return states
        bad = {k: v for k, v in states.items() if v in TERMINAL - {"COMPLETED"}}
        if bad:
            raise AssertionError(f"job {job} ended {bad}; log:\n{log_text()[-4000:]}")
        time.sleep(1)
    raise AssertionError(f"job {job} not done after {timeout} s: {_states(job)}; log:\n{log_text()[-4000:]}")


def _wait_for(pattern: str, path: Path, job: str, timeout: float = JOB_TIMEOUT_S) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        m = re.search(pattern, text, re.M)
        if m:
            return m
        if any(s in TERMINAL for s in _states(job).values()):
            break
        time.sleep(0.5)
    raise AssertionError(f"no /{pattern}/ in the log of job {job} ({_states(job)}):\n{path.read_text()[-4000:]}")


def _completed(job: str, log: Path, out: Path, timeout: float = JOB_TIMEOUT_S) -> None:
    """Job COMPLETED and the run FINISHED (a job the template requeues passes through PENDING again)."""
    _wait(job, lambda s: s.get(job) == "COMPLETED" and (out / "FINISHED").exists(), log.read_text, timeout)


@pytest.fixture(scope="module")
def recipes(train_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("template-recipes")
    train = {"max_steps": 5, "save_interval": 100, "warmup_steps": 0, "schedule": "constant", "trace_samples": True}
    return {
        "sft": write_recipe(root / "sft.yaml", train_data["sft"], data={"global_batch_size": 2}, train=train),
        "dpo": write_recipe(
            root / "dpo.yaml",
            train_data["dpo"],
            task="dpo",
            data={"global_batch_size": 2},
            train={**train, "max_steps": 4},
        ),
    }


def _trace_steps(out: Path, rank: int = 0) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "trace" / f"rank{rank}.jsonl").read_text().splitlines()]


def _xlam(*args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "xlam_hpc", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@pytest.mark.slurm
@needs_cluster
def test_single_node_template_runs_to_completion(recipes, tmp_path):
    require_cluster()
    out, log = tmp_path / "run", tmp_path / "job.out"
    job = _sbatch(
        "sft-single-node.sbatch",
        str(log),
        "--ntasks-per-node=1",
        export={"RECIPE": str(recipes["sft"]), "OUT": str(out), "CONTAINER": ""},
    )
    _completed(job, log, out)
    text = log.read_text()
    assert f"job {job} restart 0" in text and "srun exited with 0 -> done finished" in text, text
    assert "[restart 0 rank 0]" in text and "step 5/5" in text
    assert (out / "metrics.json").exists() and _trace_steps(out) == [1, 2, 3, 4, 5]
    status = _xlam("status", str(out))
    assert status.startswith("COMPLETED") and f"job {job} " in status and "checkpoint 5" in status, status
    assert status.rstrip().endswith(f"logs {log}"), status


@pytest.mark.slurm
@needs_cluster
@pytest.mark.parametrize("container", ["host", "cleanenv"])
def test_multi_node_template_two_nodes_one_rank_each(recipes, tmp_path, container):
    """2 nodes x 1 task. 'cleanenv': through a container that hides the host environment, as
    apptainer --cleanenv does; the ranks still find their rank, world size and rendezvous."""
    require_cluster()
    out, log = tmp_path / "run", tmp_path / "job.out"
    prefix, trace = cleanenv_container(tmp_path) if container == "cleanenv" else ("", None)
    job = _sbatch(
        "sft-multi-node.sbatch",
        str(log),
        "--nodes=2",
        "--ntasks-per-node=1",
        "--nodelist=n1,n2",
        export={"RECIPE": str(recipes["sft"]), "OUT": str(out), "CONTAINER": prefix},
    )
    _completed(job, log, out)
    text = log.read_text()
    assert f"job {job} restart 0 on n[1-2]" in text and "srun exited with 0 -> done finished" in text, text
    assert "[restart 0 rank 0]" in text and "[restart 0 rank 1]" in text
    assert _trace_steps(out, 0) == _trace_steps(out, 1) == [1, 2, 3, 4, 5]
    ranks = {json.loads(x)["rank"] for r in (0, 1) for x in (out / "trace" / f"rank{r}.jsonl").read_text().splitlines()}
    assert ranks == {0, 1}
    if trace is not None:
        lines = trace.read_text().splitlines()
        trainers = sorted(x.split(" cmd=")[0] for x in lines if "cmd=xlam-hpc train" in x)
        assert trainers == ["node=n1 procid=0", "node=n2 procid=1"], lines
        assert any("cmd=xlam-hpc requeue-decision" in x for x in lines), lines


@pytest.mark.slurm
@needs_cluster
def test_dpo_template_runs_to_completion(recipes, tmp_path):
    require_cluster()
    out, log = tmp_path / "run", tmp_path / "job.out"
    job = _sbatch(
        "dpo.sbatch",
        str(log),
        "--ntasks-per-node=1",
        export={"RECIPE": str(recipes["dpo"]), "OUT": str(out), "CONTAINER": ""},
    )
    _completed(job, log, out)
    text = log.read_text()
    assert "step 4/4" in text and "reward_margin" in text and "srun exited with 0 -> done finished" in text, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 4


def _restarts(job: str) -> int:
    detail = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30, check=False)
    return int(re.search(r"Restarts=(\d+)", detail.stdout).group(1))


@pytest.mark.slurm
@needs_cluster
def test_sweep_template_four_tasks_two_at_a_time(recipes, tmp_path):
    """4 array tasks, at most 2 at once, each with its own lr, seed and output_dir. One of them is
    requeued (USR1 to its batch shell): the task whose own job id is the array's id, the one whose
    bare-id `scontrol requeue` would requeue every task. Only that task restarts."""
    require_cluster()
    sweep = tmp_path / "sweep"
    job = _sbatch(
        "sweep-array.sbatch",
        str(tmp_path / "task-%a.out"),
        "--ntasks-per-node=1",
        export={"RECIPE": str(recipes["sft"]), "SWEEP_DIR": str(sweep), "CONTAINER": ""},
        args=("train.max_steps=4",),
    )

    def logs() -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("task-*.out")))

    most_running, signalled, deadline = 0, None, time.monotonic() + 2 * JOB_TIMEOUT_S
    while True:
        assert time.monotonic() < deadline, f"sweep {job} not done: {_states(job)}\n{logs()[-4000:]}"
        rows = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job, "-o", "%i %A %T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.split("\n")
        tasks = {r.split()[0]: r.split()[1:] for r in rows if re.match(rf"{job}_\d+ ", r)}
        most_running = max(most_running, sum(state == "RUNNING" for _, state in tasks.values()))
        bad = {k: v for k, v in tasks.items() if v[1] in TERMINAL - {"COMPLETED"}}
        assert not bad, f"tasks ended {bad}:\n{logs()[-4000:]}"
        if signalled is None:
            owner = next((k for k, (jid, state) in tasks.items() if jid == job and state == "RUNNING"), None)
            log = tmp_path / f"task-{owner.split('_')[1]}.out" if owner else None
            if log and log.exists() and re.search(r"^\[restart 0 rank 0\].* step 1/4 ", log.read_text(), re.M):
                subprocess.run(["scancel", "--batch", "--signal=USR1", owner], check=True, timeout=30)
                signalled = owner
        done = len(tasks) == 4 and all(state == "COMPLETED" for _, state in tasks.values())
        if done and all((sweep / f"task-{i}" / "FINISHED").exists() for i in range(4)):
            break
        time.sleep(0.5)
    assert 1 <= most_running <= 2, f"--array=0-3%2 but {most_running} tasks seen running at once"
    assert signalled is not None, f"never saw the task holding id {job} running:\n{logs()}"

    lrs = ["1e-5", "2e-5", "5e-5", "1e-4"]
    for i in range(4):
        out = sweep / f"task-{i}"
        text = (tmp_path / f"task-{i}.out").read_text()
        assert (out / "FINISHED").exists() and (out / "metrics.json").exists(), text
        assert f"job {job}_{i} " in text and f"lr={lrs[i]} seed={task_seed(7, i)} -> {out}" in text, text
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert (config["seed"], config["train"]["lr"]) == (task_seed(7, i), float(lrs[i]))
        assert "srun exited with 0 -> done finished" in text, text
        assert _trace_steps(out) == [1, 2, 3, 4]  # the requeued task too: it resumed where it saved
        status = _xlam("status", str(out))
        assert status.startswith("COMPLETED") and f"job {job}_{i} " in status, status
        assert status.rstrip().endswith(f"logs {tmp_path / f'task-{i}.out'}"), status
        if f"{job}_{i}" == signalled:
            assert "srun exited with 75 -> requeue timeout" in text, text
            assert re.search(r"^\[restart 1 rank 0\].* resumed from checkpoint-\d ", text, re.M), text
            assert _restarts(signalled) == 1
        else:
            assert "[restart 1 " not in text and _restarts(f"{job}_{i}") == 0, text


@pytest.mark.slurm
@needs_cluster
def test_single_node_template_requeues_and_resumes(recipes, tmp_path):
    """Two interruptions of one job. (1) USR1 to the batch shell, what `--signal=B:USR1@300` sends before
    the time limit: the trap passes it to srun, the rank saves and exits 75, requeue-decision says
    'requeue timeout' and the batch shell runs `scontrol requeue` itself. (2) `scontrol requeue` from
    outside: Slurm sends SIGTERM, the rank saves, Slurm requeues. Each restart resumes from the
    checkpoint its interruption saved; the log (append mode) holds all three runs."""
    require_cluster()
    out, log = tmp_path / "run", tmp_path / "job.out"
    job = _sbatch(
        "sft-single-node.sbatch",
        str(log),
        "--ntasks-per-node=1",
        export={"RECIPE": str(recipes["sft"]), "OUT": str(out), "CONTAINER": ""},
        args=("train.max_steps=8",),
    )
    _wait_for(r"^\[restart 0 rank 0\].* step 2/8 ", log, job)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
    first = int(_wait_for(r"^\[restart 0 rank 0\].*SIGUSR1: saved checkpoint-(\d+) ", log, job).group(1))
    _wait_for(r"srun exited with 75 -> requeue timeout", log, job)
    _wait_for(rf"^\[restart 1 rank 0\].* step {first + 1}/8 ", log, job)
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    _completed(job, log, out)

    text = log.read_text()
    lines = text.splitlines()

    def index(pattern: str, last: bool = False) -> int:
        found = [i for i, x in enumerate(lines) if re.search(pattern, x)]
        assert found, f"no /{pattern}/ in the log:\n{text}"
        return found[-1] if last else found[0]

    assert index(r"^\[restart 0 rank 0\]", last=True) < index(r"^\[restart 1 rank 0\]")
    assert index(r"^\[restart 1 rank 0\]", last=True) < index(r"^\[restart 2 rank 0\]")
    assert re.search(rf"^\[restart 1 rank 0\].* resumed from checkpoint-{first} ", text, re.M), text
    second = int(re.search(r"^\[restart 1 rank 0\].*SIGTERM: saved checkpoint-(\d+) ", text, re.M).group(1))
    assert first < second <= 8
    assert re.search(rf"^\[restart 2 rank 0\].* resumed from checkpoint-{second} ", text, re.M), text
    assert "USR1: time limit ahead" in text and "srun exited with 0 -> done finished" in text
    # every step ran exactly once: each restart continued where the signal-triggered save stopped
    assert _trace_steps(out) == list(range(1, 9))
    ledger = json.loads((out / "launch" / "ledger.json").read_text())
    assert ledger["timeouts"] == 1 and ledger["failures"] == 0, ledger
    assert ledger["history"][0]["reason"] == "timeout" and ledger["history"][0]["signal"] == "SIGUSR1"
    assert _restarts(job) >= 2


@pytest.mark.slurm
@needs_cluster
def test_single_node_template_preempted_requeues_itself(recipes, tmp_path):
    """A `high` job preempts the template's job on its node. Partition `low` has GraceTime: only the
    ranks get SIGTERM; they save and exit 75, so the job would end COMPLETED (Slurm does not requeue a
    job that exits during the grace). The batch shell's 'requeue preemption' + scontrol requeue
    brings it back, and it resumes from the checkpoint saved at the signal."""
    require_cluster()
    out, log = tmp_path / "run", tmp_path / "job.out"
    job = _sbatch(
        "sft-single-node.sbatch",
        str(log),
        "--ntasks-per-node=1",
        export={"RECIPE": str(recipes["sft"]), "OUT": str(out), "CONTAINER": ""},
        args=("train.max_steps=8",),
    )
    _wait_for(r"^\[restart 0 rank 0\].* step 2/8 ", log, job)
    node = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    # only the node this job runs on: the preemption leaves jobs on the other node alone
    high = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "high",
            "-N1",
            "-w",
            node,
            "--exclusive",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    _completed(job, log, out)
    assert _states(high).get(high) == "COMPLETED"
    text = log.read_text()
    saved = int(re.search(r"^\[restart 0 rank 0\].*SIGTERM: saved checkpoint-(\d+) ", text, re.M).group(1))
    assert "srun exited with 75 -> requeue preemption" in text, text
    assert re.search(rf"^\[restart 1 rank 0\].* resumed from checkpoint-{saved} ", text, re.M), text
    assert _trace_steps(out) == list(range(1, 9))
    ledger = json.loads((out / "launch" / "ledger.json").read_text())
    assert (ledger["preemptions"], ledger["timeouts"], ledger["failures"]) == (1, 0, 0), ledger
    assert _restarts(job) == 1

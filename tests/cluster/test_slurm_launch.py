"""`xlam-hpc submit` on the real 2-node Slurm cluster: completion, multi-node, and every way a job gets
interrupted (preemption, time limit, scontrol requeue, a rank SIGKILLed). Each interrupted run must end
with the same effective trace (last record per step) and the same final weights as an uninterrupted
local run of the same recipe: resume is exact whatever stopped the job.

Timings of each interruption (signal → saved checkpoint, requeue → first resumed step) are measured
from the jobs' own logs and appended to runs/test-artifacts/slurm-timings.jsonl.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.cluster.conftest import needs_cluster, require_cluster
from tests.integration.conftest import write_recipe
from xlam_hpc.testing.runs import effective_trace, final_weights, wait_for_step

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900), needs_cluster]

STEPS = 30
ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"


@pytest.fixture(scope="module", autouse=True)
def _cluster():
    require_cluster()


@pytest.fixture(scope="module")
def recipe(train_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-recipe")
    return write_recipe(
        root / "recipe.yaml",
        train_data["sft"],
        data={"shards": [str(train_data["sft"])], "global_batch_size": 2},
        collate={"seq_length": 512, "chat_template": "builtin"},
        train={
            "max_steps": STEPS,
            "save_interval": 5,
            "keep_last": 3,
            "lr": 1.0e-3,
            "schedule": "constant",
            "warmup_steps": 0,
            "trace_samples": True,
        },
        launch={"cpus_per_task": 1, "partition": "low", "time_min": 20},
    )


def _xlam(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "xlam_hpc", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _submit(recipe, out, *overrides, cluster="slurm", wait=False) -> str:
    args = ["submit", str(recipe), f"output_dir={out}", *overrides, "--cluster", cluster] + (["--wait"] if wait else [])
    res = _xlam(*args)
    m = re.search(r"submitted \w+ job (\S+):", res.stderr)
    assert m, res.stderr
    return m.group(1)


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory):
    """Uninterrupted local runs (the embedded default executor) with 1 and 2 ranks."""
    root = tmp_path_factory.mktemp("reference")
    for n in (1, 2):
        res = _xlam(
            "submit",
            str(recipe),
            f"output_dir={root / f'ranks{n}'}",
            f"launch.tasks_per_node={n}",
            "--cluster",
            "local",
        )
        # a local submit streams the rank-0 training log while it runs (only rank 0's)
        steps = [x for x in res.stderr.splitlines() if re.match(r" *\[restart 0 rank 0\] .* step \d+/", x)]
        assert len(steps) >= 2 and "rank 1]" not in res.stderr, res.stderr
    return {n: root / f"ranks{n}" for n in (1, 2)}


def _state(job: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False
    ).stdout.split()
    return out[0] if out else "GONE"


def _wait_finished(out: Path, job: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "FINISHED").exists() and _state(job) in ("COMPLETED", "GONE"):
            return
        time.sleep(2)
    raise AssertionError(f"job {job} not finished: state {_state(job)}; logs:\n{_logs(out)[-3000:]}")


def _logs(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((out / "launch" / "submitit").rglob("*_log.*")))


def _assert_equal_runs(ref: Path, out: Path, steps: int = STEPS) -> None:
    a, b = effective_trace(ref), effective_trace(out)
    assert sorted(a) == sorted(b)
    for rank in a:
        assert sorted(b[rank]) == list(range(1, steps + 1))
        for step in a[rank]:
            assert (a[rank][step]["sample_ids"], a[rank][step]["loss"]) == (
                b[rank][step]["sample_ids"],
                b[rank][step]["loss"],
            ), (rank, step)
    wa, wb = final_weights(ref), final_weights(out)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _clock(line: str) -> dt.datetime:
    return dt.datetime.strptime(re.search(r"\] (\d\d:\d\d:\d\d) ", line).group(1), "%H:%M:%S")


def _record_timings(kind: str, out: Path, signal_name: str) -> dict:
    """From the job's logs: seconds from the signal to the saved checkpoint (the trainer's own measure) and
    from the last pre-restart line to the first step of the next restart."""
    text = _logs(out)
    saved = re.search(rf"\[restart (\d+) rank 0\].*{signal_name}: saved checkpoint-(\d+) ([\d.]+) s after", text)
    assert saved, f"no '{signal_name}: saved checkpoint' line in the logs:\n{text[-3000:]}"
    restart, step = int(saved.group(1)), int(saved.group(2))
    stop_line = next(x for x in text.splitlines() if f"{signal_name}: saved checkpoint-{step}" in x and "rank 0]" in x)
    first = next(
        x
        for x in text.splitlines()
        if x.startswith(f"[restart {restart + 1} rank 0]") and re.search(rf"step {step + 1}/", x)
    )
    row = {
        "test": kind,
        "signal": signal_name,
        "checkpoint_step": step,
        "signal_to_checkpoint_s": float(saved.group(3)),
        "stop_to_first_resumed_step_s": (_clock(first) - _clock(stop_line)).total_seconds(),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "slurm-timings.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def _rank_pids(job: str) -> dict[int, int]:
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            env = p.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("SLURM_JOB_ID") == job and "submitit.core._submit" in " ".join(p.info["cmdline"] or []):
            found[int(env["SLURM_PROCID"])] = p.pid
    return found


def test_single_node_submit_equals_local_run(recipe, reference, tmp_path):
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.tasks_per_node=1", wait=True)
    _wait_finished(out, job)
    _assert_equal_runs(reference[1], out)
    status = _xlam("status", str(out)).stdout
    assert "FINISHED" in status or "COMPLETED" in status
    assert f"checkpoint {STEPS}" in status and f"job {job}" in status


def test_two_nodes_one_rank_each_equals_local_two_ranks(recipe, reference, tmp_path):
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.nodes=2", "launch.tasks_per_node=1", wait=True)
    _wait_finished(out, job)
    _assert_equal_runs(reference[2], out)
    text = _logs(out)
    assert "[restart 0 rank 1]" in text
    nodes = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False).stdout
    assert "NodeList=n[1-2]" in nodes or ("n1" in nodes and "n2" in nodes)


def test_preemption_checkpoints_requeues_and_resumes_exactly(recipe, reference, tmp_path):
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.tasks_per_node=2")
    wait_for_step(out, 6, timeout=300)
    high = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "high",
            "-N2",
            "--exclusive",
            "-o",
            str(tmp_path / "high.out"),
            "--wrap",
            "sleep 3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    _wait_finished(out, job)
    assert _state(high) == "COMPLETED"
    row = _record_timings("preemption", out, "SIGTERM")
    assert row["signal_to_checkpoint_s"] < 20  # saved inside the partition's GraceTime (the job was not killed)
    ledger = json.loads((out / "launch" / "ledger.json").read_text())
    assert ledger["preemptions"] == 1 and ledger["failures"] == 0
    _assert_equal_runs(reference[2], out)


def _elapsed_s(job: str) -> int:
    text = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True, check=True).stdout
    parts = [int(x) for x in text.strip().replace("-", ":").split(":")]
    return sum(v * m for v, m in zip(reversed(parts), (1, 60, 3600, 86400), strict=False))


def test_time_limit_signal_checkpoints_and_requeues(recipe, reference, tmp_path):
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.tasks_per_node=1", "launch.signal_before_limit_s=300")
    wait_for_step(out, 4, timeout=300)
    # Hold the rank still so the signal lands mid-run on a machine of any speed, then bring the limit close:
    # slurmctld signals at its next check (the remaining time is inside the 300 s window); slurmstepd sends
    # SIGCONT with the USR2, so the rank wakes up to a pending signal.
    pid = _rank_pids(job)[0]
    stop_record = out / "launch" / "last_stop.json"
    os.kill(pid, signal.SIGSTOP)
    try:
        limit_min = _elapsed_s(job) // 60 + 4  # 180-240 s left: inside the window, far from the limit
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={limit_min}"], check=True)
        deadline = time.monotonic() + 180
        while not stop_record.exists():
            assert time.monotonic() < deadline, "no SIGUSR2 stop recorded within 180 s"
            time.sleep(0.2)
        # the requeued run gets the full limit again (else it would be signalled at once, again and again)
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=20"], check=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    _wait_finished(out, job)
    ledger = json.loads((out / "launch" / "ledger.json").read_text())
    assert (ledger["timeouts"], ledger["failures"], ledger["preemptions"]) == (1, 0, 0)
    _record_timings("time_limit", out, "SIGUSR2")
    _assert_equal_runs(reference[1], out)


def test_scontrol_requeue_resumes_from_the_signal_checkpoint(recipe, reference, tmp_path):
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.tasks_per_node=2")
    wait_for_step(out, 7, timeout=300)
    subprocess.run(["scontrol", "requeue", job], check=True)
    _wait_finished(out, job)
    _record_timings("scontrol_requeue", out, "SIGTERM")
    assert "resumed from checkpoint-" in _logs(out)
    _assert_equal_runs(reference[2], out)


def test_sigkill_of_one_rank_is_retried_within_the_failure_budget(recipe, reference, tmp_path):
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.tasks_per_node=2", "launch.max_failures=2")
    wait_for_step(out, 8, rank=1, timeout=300)
    pids = _rank_pids(job)
    assert sorted(pids) == [0, 1]
    os.kill(pids[1], signal.SIGKILL)  # no chance to save: resume from the last periodic checkpoint
    _wait_finished(out, job)
    ledger = json.loads((out / "launch" / "ledger.json").read_text())
    assert ledger["failures"] == 1 and ledger["history"][0]["reason"] == "failure"
    assert re.search(r"\[restart 1 rank 0\].*resumed from checkpoint-(5|10) ", _logs(out))
    trace = effective_trace(out)[0]
    redone = [json.loads(x)["step"] for x in (out / "trace" / "rank0.jsonl").read_text().splitlines()]
    assert len(redone) > len(trace)  # steps after the checkpoint ran twice; the effective trace keeps the last
    _assert_equal_runs(reference[2], out)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("launch.partition=nope", "invalid partition specified: nope"),
        ("launch.mem_gb=100000", "Requested node configuration is not available"),
    ],
)
def test_sbatch_refusals_are_shown_not_a_traceback(recipe, tmp_path, override, message):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "xlam_hpc",
            "submit",
            str(recipe),
            f"output_dir={tmp_path / 'o'}",
            override,
            "--cluster",
            "slurm",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "xlam-hpc submit: error: sbatch refused the job:" in res.stderr and message in res.stderr


def test_hostile_job_name_is_submitted_as_text(recipe, tmp_path):
    marker = tmp_path / "pwned"
    name = f'it\'s "x" $(touch {marker}) `touch {marker}`; touch {marker}'
    job = _submit(
        recipe, tmp_path / "o", f"launch.job_name={json.dumps(name)}", "launch.tasks_per_node=1", "train.max_steps=1"
    )
    try:
        shown = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job, "-o", "%j"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert shown == name
    finally:
        subprocess.run(["scancel", job], check=False)
    assert not marker.exists()


def test_submit_through_a_cleanenv_container_keeps_ranks_apart(recipe, reference, tmp_path):
    """`apptainer exec --cleanenv` hides SLURM_* from the ranks: submit hands them in as APPTAINERENV_*,
    so 2 nodes x 1 rank still train as ranks 0 and 1 (without it both would be rank 0 of 1)."""
    from tests.cluster.conftest import cleanenv_container

    container, log = cleanenv_container(tmp_path)
    out = tmp_path / "run"
    job = _submit(
        recipe, out, "launch.nodes=2", "launch.tasks_per_node=1", f"launch.container={json.dumps(container)}", wait=True
    )
    _wait_finished(out, job)
    started = log.read_text()
    assert "procid=0" in started and "procid=1" in started
    _assert_equal_runs(reference[2], out)


# --- issue 13: hostile values in the batch script, a TERM to the whole job, every restart counted ----------------


def _status_json(out: Path) -> dict:
    return json.loads(_xlam("status", str(out), "--json").stdout)[0]


def test_hostile_output_dir_job_name_and_partition_stay_text(recipe, tmp_path):
    """A space, a quote, `;` and `$(...)` in output_dir and launch.job_name run as plain text on the real
    cluster (the job trains into exactly that directory); in launch.partition sbatch refuses the name. Nothing
    that follows a `;` or sits in `$(...)` ever runs."""
    marker = tmp_path / "pwned"
    hostile = f"a b;touch {marker}; it's $(touch {marker}) `touch {marker}`"
    out = tmp_path / hostile
    job = _submit(
        recipe,
        out,
        "launch.tasks_per_node=1",
        "train.max_steps=2",
        f"launch.job_name={json.dumps(hostile)}",
        "launch.setup=['echo setup-ran >&2']",
        wait=True,
    )
    _wait_finished(out, job)
    assert json.loads((out / "FINISHED").read_text())["step"] == 2
    shown = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job, "-o", "%j"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == hostile
    assert "setup-ran" in _logs(out)  # launch.setup ran in the batch shell, before srun
    status = _status_json(out)
    assert status["state"] in ("COMPLETED", "FINISHED") and status["output_dir"] == str(out)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "xlam_hpc",
            "submit",
            str(recipe),
            f"output_dir={tmp_path / 'p'}",
            f"launch.partition={json.dumps(hostile)}",
            "--cluster",
            "slurm",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2 and "sbatch refused the job" in res.stderr and "Traceback" not in res.stderr
    assert "invalid partition specified" in res.stderr
    assert not marker.exists()


def _max_traced_step(out: Path) -> int:
    steps = [0]
    for path in (out / "trace").glob("rank*.jsonl"):
        steps += [json.loads(x)["step"] for x in path.read_text().splitlines() if x.strip()]
    return max(steps)


def _restarts_seen(job: str) -> int:
    text = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False).stdout
    m = re.search(r"Restarts=(\d+)", text)
    return int(m.group(1)) if m else 0


def _wait_restarted(job: str, restarts: int, out: Path, timeout: float = 240) -> None:
    """Until Slurm has restarted the job `restarts` times and its ranks run again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _restarts_seen(job) >= restarts and _state(job) == "RUNNING" and len(_rank_pids(job)) == 2:
            return
        if (out / "FINISHED").exists():
            raise AssertionError(f"the run finished before restart {restarts}:\n{_logs(out)[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"job {job} not running again (restart {restarts}): {_state(job)}\n{_logs(out)[-3000:]}")


def _hold(job: str) -> dict[int, int]:
    """Stop the ranks (SIGSTOP) so that the next interruption lands before the run can finish."""
    pids = _rank_pids(job)
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    return pids


def _release(pids: dict[int, int]) -> None:
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_six_kinds_of_interruption_in_one_run_recover_by_themselves(recipe, reference, tmp_path):
    """One 2-node run takes, each after new progress: preemption by a `high` job, `scontrol requeue`, SIGTERM
    to the steps, a time limit, a SIGKILLed rank, and `scancel --signal=TERM --full` (the batch shell too).
    It finishes without a resubmission, every restart is in the ledger and `status`, and its effective trace
    and final weights equal the uninterrupted local 2-rank run."""
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.nodes=2", "launch.tasks_per_node=1", "launch.signal_before_limit_s=300")
    stop_record = out / "launch" / "last_stop.json"
    progress = 0

    def new_progress(restart: int) -> None:
        nonlocal progress
        if restart:
            _wait_restarted(job, restart, out)
        wait_for_step(out, _max_traced_step(out) + 1 if restart else 3, timeout=300)
        wait_for_step(out, _max_traced_step(out) + 1, rank=1, timeout=300)
        assert _max_traced_step(out) > progress
        progress = _max_traced_step(out)

    # 1. preemption: a high-priority job wants one of the nodes (the ranks get SIGTERM from Slurm)
    new_progress(0)
    high = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "high",
            "-N1",
            "--exclusive",
            "-o",
            str(tmp_path / "high.out"),
            "--wrap=sleep 2",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # 2. scontrol requeue
    new_progress(1)
    assert _state(high) in ("COMPLETED", "COMPLETING")
    subprocess.run(["scontrol", "requeue", job], check=True)
    # 3. SIGTERM to the steps (not the batch shell)
    new_progress(2)
    subprocess.run(["scancel", "--signal=TERM", job], check=True)
    # 4. the time limit comes close: USR2 300 s before it (at slurmctld's next 30 s check)
    new_progress(3)
    pids = _hold(job)
    try:
        limit_min = _elapsed_s(job) // 60 + 4
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={limit_min}"], check=True)
        deadline = time.monotonic() + 180
        while not stop_record.exists():
            assert time.monotonic() < deadline, "no SIGUSR2 stop recorded within 180 s"
            time.sleep(0.2)
    finally:  # the requeued run gets the full limit again (else it would be signalled at once, again and again)
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=20"], check=False)
        _release(pids)
    # 5. one rank SIGKILLed: no save, the run resumes from the last periodic checkpoint (failure budget)
    new_progress(4)
    os.kill(_rank_pids(job)[1], signal.SIGKILL)
    # 6. SIGTERM to the whole job, batch shell included: srun kills the ranks, the batch shell survives,
    # decides and requeues
    new_progress(5)
    subprocess.run(["scancel", "--signal=TERM", "--full", job], check=True)
    _wait_finished(out, job)

    assert _restarts_seen(job) == 6
    ledger = json.loads((out / "launch" / "ledger.json").read_text())
    assert (ledger["timeouts"], ledger["preemptions"], ledger["failures"]) == (1, 4, 1), ledger["history"]
    requeues = [h for h in ledger["history"] if h["action"] == "requeue"]
    assert len(requeues) == 6 and sorted(h["restart"] for h in requeues) == [0, 1, 2, 3, 4, 5]
    status = _status_json(out)
    assert status["jobs"] == 1 and status["restarts"] == 6 and status["state"] in ("COMPLETED", "FINISHED")
    assert status["requeues"] == {"timeouts": 1, "preemptions": 4, "failures": 1}
    assert "batch shell got SIGTERM" in _logs(out)
    _assert_equal_runs(reference[2], out)


def test_a_failed_job_shows_its_cause_and_a_resubmission_keeps_the_run_totals(recipe, reference, tmp_path):
    """A rank SIGKILLed twice without progress in between, with max_failures=1: one requeue, then the job
    gives up (FAILED); `status` names the failing rank, srun's line and that rank's log. A resubmission
    with the same output_dir (a new job id) finishes the run; `status` still counts the first job's
    restart and failures, and the run equals the uninterrupted one."""
    out = tmp_path / "run"
    job = _submit(recipe, out, "launch.nodes=2", "launch.tasks_per_node=1", "launch.max_failures=1")
    wait_for_step(out, 2, rank=1, timeout=300)
    os.kill(_rank_pids(job)[1], signal.SIGKILL)
    _wait_restarted(job, 1, out)
    rank1_log = out / "launch" / "submitit" / job / f"{job}_1_log.err"
    deadline = time.monotonic() + 120
    while "[restart 1 rank 1]" not in rank1_log.read_text(errors="replace"):  # the restarted rank 1 itself runs
        assert time.monotonic() < deadline, f"rank 1 of restart 1 never logged:\n{_logs(out)[-3000:]}"
        time.sleep(0.2)
    os.kill(_rank_pids(job)[1], signal.SIGKILL)  # no checkpoint in between: the second failure in a row
    deadline = time.monotonic() + 120
    while _state(job) != "FAILED":
        assert time.monotonic() < deadline, f"job {job} is {_state(job)}, not FAILED:\n{_logs(out)[-3000:]}"
        time.sleep(1)
    status = _status_json(out)
    assert status["state"] == "FAILED" and status["restarts"] == 1
    cause = status["cause"]
    assert cause["rank"] == 1 and re.search(r"srun: error: n\d: task 1: Killed", cause["line"]), cause
    assert cause["log"] == str(out / "launch" / "submitit" / job / f"{job}_1_log.err")
    text = _xlam("status", str(out)).stdout
    assert f"last failure: rank 1: {cause['line']}  (log {cause['log']})" in text

    job2 = _submit(recipe, out, "launch.nodes=2", "launch.tasks_per_node=1")
    assert job2 != job
    _wait_finished(out, job2)
    status = _status_json(out)
    assert (status["job_id"], status["jobs"], status["restarts"]) == (job2, 2, 1)
    assert status["restarts_by_job"] == {job: 1}
    assert status["requeues"]["failures"] == 2 and status["cause"] is None
    assert "restarts 1 over 2 jobs" in _xlam("status", str(out)).stdout
    _assert_equal_runs(reference[2], out)

"""Launch bad input: hostile values are quoted (never executed), newlines refused, Slurm tools required,
one job per output_dir."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import write_recipe
from xlam_hpc.cli import main
from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.slurm import check_sbatch_value
from xlam_hpc.launch.submit import dry_run
from xlam_hpc.recipe import load_recipe
from xlam_hpc.runenv.lock import acquire_output_lock

HOSTILE = 'my job\'s "name" $(touch /tmp/xlam-pwned) `id`; rm -rf ~'


@pytest.fixture
def recipe_path(tmp_path, shard_dir):
    return write_recipe(tmp_path / "r.yaml", shard_dir / "alpha", launch={"partition": "low"})


def test_dry_run_quotes_every_value_and_bash_never_runs_them(recipe_path, tmp_path):
    recipe = load_recipe(
        recipe_path, [f"launch.job_name={HOSTILE}", f"launch.account={HOSTILE}", f"output_dir={tmp_path / 'out dir'}"]
    )
    script = dry_run(recipe)
    lines = [
        x for x in script.splitlines() if x.startswith("#SBATCH --job-name=") or x.startswith("#SBATCH --account=")
    ]
    assert len(lines) == 2
    for line in lines:
        value = line.split("=", 1)[1]
        assert (
            subprocess.run(["bash", "-c", f"printf %s {value}"], capture_output=True, text=True, check=True).stdout
            == HOSTILE
        )  # one shell word that is exactly the value
    # the whole script parses as bash and the teardown's output path is one quoted word
    assert subprocess.run(["bash", "-n", "-c", script], check=False).returncode == 0
    assert f"'{tmp_path / 'out dir'}'" in script


@pytest.mark.parametrize("value", ["a\nscontrol requeue 1", "tab\there", "nul\x00"])
def test_control_characters_are_refused(value):
    with pytest.raises(ConfigError, match="control character"):
        check_sbatch_value("job_name", value)


def test_newline_in_a_recipe_value_fails_the_submit(recipe_path, capsys):
    assert main(["submit", str(recipe_path), 'launch.job_name="x\\nrm -rf /"', "--cluster", "slurm", "--dry-run"]) == 2
    assert "control character" in capsys.readouterr().err


def test_missing_srun_is_a_clear_error(recipe_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["submit", str(recipe_path), f"output_dir={tmp_path / 'o'}", "--cluster", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "'sbatch' not found on PATH" in err and "--cluster local" in err


def test_output_dir_of_a_running_job_is_refused(recipe_path, tmp_path, capsys):
    out = tmp_path / "busy"
    held = acquire_output_lock(out)  # a running trainer holds this for its whole life
    try:
        with pytest.raises(ConfigError, match="in use by another running job"):
            acquire_output_lock(out)
        assert main(["submit", str(recipe_path), f"output_dir={out}", "--cluster", "local"]) == 2
        assert "in use by another running job (pid " in capsys.readouterr().err
    finally:
        held.close()
    acquire_output_lock(out).close()  # released: the next job (or a requeued one) takes it


# --- KEY=VALUE overrides anywhere on the command line ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        (["train", "r.yaml", "a=1", "b.c=2"], ["a=1", "b.c=2"]),
        (["stream", "r.yaml", "--steps", "3", "key=val"], ["key=val"]),
        (["stream", "r.yaml", "a=1", "--steps", "3", "b=2", "--rank", "0", "a=3"], ["a=1", "b=2", "a=3"]),
        (["submit", "r.yaml", "key=val", "--cluster", "local", "key2=val"], ["key=val", "key2=val"]),
        (["submit", "r.yaml", "--dry-run", "launch.job_name=x y"], ["launch.job_name=x y"]),
        (["sweep", "r.yaml", "x=1", "--grid", "lr=1,2", "--dry-run", "y=2"], ["x=1", "y=2"]),
        (["render", "r.yaml", "--samples", "1", "collate.mode=trajectory"], ["collate.mode=trajectory"]),
    ],
)
def test_overrides_are_collected_from_anywhere_in_order(argv, overrides):
    from xlam_hpc.cli import build_parser

    assert build_parser().parse_args(argv).overrides == overrides


def test_a_stray_word_is_still_an_error(capsys):
    from xlam_hpc.cli import build_parser

    for argv in (["stream", "r.yaml", "--steps", "3", "oops"], ["inspect", "dir", "a=1"]):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 2
        assert "unrecognized arguments: " + argv[-1] in capsys.readouterr().err


def test_stream_applies_an_override_given_after_the_options(recipe_path, tmp_path):
    trace = tmp_path / "trace.jsonl"
    argv = ["stream", str(recipe_path), "--steps", "2", "--trace", str(trace), "data.global_batch_size=3"]
    assert main(argv) == 0
    import json

    rows = [json.loads(x) for x in trace.read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["sample_ids"]) == 3 for r in rows), rows[0]

"""Bad recipes and bad output dirs fail fast with one clear line; signals give the requeue exit code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.integration.conftest import write_recipe
from xlam_hpc.cli import main
from xlam_hpc.testing.runs import wait_for_step
from xlam_hpc.train.signals import REQUEUE_EXIT_CODE


def _fail(capsys, *argv) -> str:
    assert main(["train", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("xlam-hpc train: error: ")
    return err[-1]


def test_unknown_key_lists_valid_keys_with_suggestion(train_data, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], train={"learning_rate": 1e-3})
    msg = _fail(capsys, recipe)
    assert "unknown key 'train.learning_rate'" in msg and "Valid keys of train:" in msg and "max_steps" in msg


def test_close_match_and_wrong_type(train_data, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"])
    assert "Did you mean 'collate'?" in _fail(capsys, recipe, "colate.seq_length=10")
    assert "Expected `int`, got `str` - at `$.train.max_steps`" in _fail(capsys, recipe, "train.max_steps=many")


def test_missing_model_path(train_data, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], model={"name_or_path": str(tmp_path / "nope")})
    assert "neither a preset" in _fail(capsys, recipe, f"output_dir={tmp_path / 'out'}")


def test_tokenizer_model_vocab_mismatch(train_data, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], model={"config_overrides": {"vocab_size": 1000}})
    msg = _fail(capsys, recipe, f"output_dir={tmp_path / 'out'}")
    assert "model vocabulary (1000) is smaller than the tokenizer's (32768)" in msg


def test_wandb_only_when_asked_and_then_installed(train_data, tmp_path, capsys):
    """W&B is never required: asking for it without the package is one clear line, before any setup."""
    import importlib.util

    assert importlib.util.find_spec("wandb") is None  # not a dependency: TensorBoard is the default
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], train={"report_to": ["tensorboard", "wandb"]})
    assert "asks for wandb, which is not installed: pip install wandb" in _fail(
        capsys, recipe, f"output_dir={tmp_path / 'out'}"
    )
    assert "unknown ['mlflow']" in _fail(capsys, recipe, "train.report_to=[mlflow]")


def test_deepspeed_config_inconsistent_with_batch(train_data, tmp_path, capsys):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_batch_size": 7}))
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], train={"deepspeed": str(ds)})
    msg = _fail(capsys, recipe, f"output_dir={tmp_path / 'out'}")
    assert "train_batch_size=7 disagrees with the recipe" in msg and "train_batch_size=4" in msg
    ds.write_text("{broken")
    assert "invalid JSON at line 1" in _fail(capsys, recipe, f"output_dir={tmp_path / 'out'}")


def test_output_dir_of_another_configuration_is_refused(train_data, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "manifest.json").write_text(json.dumps({"fingerprint": "someone-else", "files": {}}))
    (out / "latest").write_text("checkpoint-3\n")
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"])
    msg = _fail(capsys, recipe, f"output_dir={out}")
    assert "holds a checkpoint of another configuration" in msg and "resume: force" in msg


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_signal_gives_requeue_code_then_resume_finishes(train_data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], train={"max_steps": 5})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "xlam_hpc", "train", str(recipe), f"output_dir={out}"]
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_for_step(out, 2, launcher=proc)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=300) == REQUEUE_EXIT_CODE
    text = (tmp_path / "log").read_text()
    assert "SIGUSR2: saved checkpoint-" in text and "grace budget 60 s" in text
    step = int((out / "latest").read_text().strip().split("-")[1])
    assert step >= 2
    assert subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=300, check=False).returncode == 0
    assert f"resumed from checkpoint-{step} (step {step})" in (tmp_path / "log").read_text()
    assert json.loads((out / "FINISHED").read_text())["step"] == 5
    # a spurious restart of a finished job exits at once
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and "is finished (step 5); nothing to do" in again.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 5


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_failed_save_keeps_the_previous_checkpoint_valid(train_data, tmp_path):
    """A real write failure mid-run (the OS refuses files over RLIMIT_FSIZE, like a full quota):
    the save fails cleanly, `latest` still names the previous checkpoint, and a rerun resumes from it."""
    import resource

    from xlam_hpc.train.checkpoint import CheckpointError, verify_checkpoint

    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], train={"max_steps": 8, "save_interval": 2})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "xlam_hpc", "train", str(recipe), f"output_dir={out}"]
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_for_step(out, 2, launcher=proc)
    while not (out / "latest").exists():
        time.sleep(0.05)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # model states are ~68 MB
    assert proc.wait(timeout=300) == CheckpointError.exit_code
    text = (tmp_path / "log").read_text()
    assert "saving checkpoint-4 failed" in text and "file-size limit 65536 bytes" in text
    assert "the last valid checkpoint is still checkpoint-2" in text
    assert (out / "latest").read_text().strip() == "checkpoint-2" and verify_checkpoint(out / "checkpoint-2") is None
    assert not (out / "checkpoint-4").exists()
    assert subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=300, check=False).returncode == 0
    assert "resumed from checkpoint-2 (step 2)" in (tmp_path / "log").read_text()
    assert json.loads((out / "FINISHED").read_text())["step"] == 8
